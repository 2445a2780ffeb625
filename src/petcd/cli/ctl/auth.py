"""auth enable/disable/status, user and role commands, as etcdctl 3.4 prints them
(`auth status` is etcdctl 3.5's)."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from petcd.cli.ctl import output as out
from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args, bad_args
from petcd.cli.ctl.common import CtlError
from petcd.cli.ctl.kv import emit, prefix_end
from petcd.pb.authpb import auth_pb2 as authpb
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

_PERM = {"READ": authpb.Permission.READ, "WRITE": authpb.Permission.WRITE,
         "READWRITE": authpb.Permission.READWRITE}
_PERM_NAME = {v: k for k, v in _PERM.items()}


def _show(a: Args, resp: Any, simple: str, fields: str = "") -> None:
    fmt = a.write_out
    if fmt == "simple":
        out.write(simple)
    elif fmt == "fields":
        out.write(out.header_fields(resp.header) + fields)
    elif fmt == "json":
        out.print_json(out.go_json_value(resp))
    elif fmt == "protobuf":
        emit(resp.SerializeToString().decode("latin-1"), fmt)
    else:
        raise out.unsupported(fmt)


def _call(a: Args, method: str, req: Any, client: Client | None = None) -> Any:
    return (client or Client(a)).call("Auth", method, req)


def run_auth_enable(a: Args) -> None:
    if a.args:
        raise bad_args("auth enable command does not accept any arguments")
    c = Client(a)
    while True:
        try:
            c.call("Auth", "AuthEnable", rpc.AuthEnableRequest())
            break
        except CtlError as e:
            if str(e) != "etcdserver: root user does not have root role":
                raise
            c.call("Auth", "RoleAdd", rpc.AuthRoleAddRequest(name="root"))
            c.call("Auth", "UserGrantRole", rpc.AuthUserGrantRoleRequest(user="root",
                                                                          role="root"))
    print("Authentication Enabled")


def run_auth_disable(a: Args) -> None:
    if a.args:
        raise bad_args("auth disable command does not accept any arguments")
    _call(a, "AuthDisable", rpc.AuthDisableRequest())
    print("Authentication Disabled")


def run_auth_status(a: Args) -> None:
    if a.args:
        raise bad_args("auth status command does not accept any arguments")
    r = _call(a, "AuthStatus", rpc.AuthStatusRequest())
    _show(a, r, f"Authentication Status: {out.go_bool(r.enabled)}\n"
          f"AuthRevision: {r.authRevision}\n",
          f'"Enabled" : {out.go_bool(r.enabled)}\n"AuthRevision" : {r.authRevision}\n')


def _ask_password(name: str) -> str:
    p1 = getpass.getpass(f"Password of {name}: ")
    if not p1:
        raise bad_args("empty password")
    p2 = getpass.getpass(f"Type password of {name} again for confirmation: ")
    if p1 != p2:
        raise bad_args("given passwords are different")
    return p1


def _scan_word() -> str:
    words = sys.stdin.readline().split()
    return words[0] if words else ""


def run_user_add(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("user add command requires user name as its argument")
    password, user = "", a.args[0]
    if not a.no_password:
        if a.new_user_password:
            password = a.new_user_password
        elif ":" in user:
            user, password = user.split(":", 1)
            if not user:
                raise bad_args("empty user name is not allowed")
        else:
            password = _scan_word() if not a.interactive else _ask_password(user)
    req = rpc.AuthUserAddRequest(name=user, password=password)
    if a.no_password:
        req.options.no_password = True
    _show(a, _call(a, "UserAdd", req), f"User {user} created\n")


def _one(a: Args, what: str) -> str:
    if len(a.args) != 1:
        raise bad_args(f"{what} command requires {'user' if 'user' in what else 'role'} "
                       "name as its argument")
    name: str = a.args[0]
    return name


def run_user_delete(a: Args) -> None:
    name = _one(a, "user delete")
    _show(a, _call(a, "UserDelete", rpc.AuthUserDeleteRequest(name=name)),
          f"User {name} deleted\n")


def run_user_get(a: Args) -> None:
    name = _one(a, "user get")
    c = Client(a)
    r = _call(a, "UserGet", rpc.AuthUserGetRequest(name=name), c)
    if a.detail:
        out.write(f"User: {name}\n")
        for role in r.roles:
            out.write("\n")
            _role_get(a, role, _call(a, "RoleGet", rpc.AuthRoleGetRequest(role=role), c))
        return
    _show(a, r, f"User: {name}\nRoles:" + "".join(f" {x}" for x in r.roles) + "\n")


def run_user_list(a: Args) -> None:
    if a.args:
        raise bad_args("user list command requires no arguments")
    r = _call(a, "UserList", rpc.AuthUserListRequest())
    _show(a, r, "".join(f"{u}\n" for u in r.users))


def run_user_passwd(a: Args) -> None:
    name = _one(a, "user passwd")
    password = _scan_word() if not a.interactive else _ask_password(name)
    _show(a, _call(a, "UserChangePassword", rpc.AuthUserChangePasswordRequest(
        name=name, password=password)), "Password updated\n")


def run_user_grant(a: Args) -> None:
    if len(a.args) != 2:
        raise bad_args("user grant command requires user name and role name as its argument")
    user, role = a.args
    _show(a, _call(a, "UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role)),
          f"Role {role} is granted to user {user}\n")


def run_user_revoke(a: Args) -> None:
    if len(a.args) != 2:
        raise bad_args("user revoke-role requires user name and role name as its argument")
    user, role = a.args
    _show(a, _call(a, "UserRevokeRole", rpc.AuthUserRevokeRoleRequest(name=user, role=role)),
          f"Role {role} is revoked from user {user}\n")


# -- roles
def run_role_add(a: Args) -> None:
    name = _one(a, "role add")
    _show(a, _call(a, "RoleAdd", rpc.AuthRoleAddRequest(name=name)), f"Role {name} created\n")


def run_role_delete(a: Args) -> None:
    name = _one(a, "role delete")
    _show(a, _call(a, "RoleDelete", rpc.AuthRoleDeleteRequest(role=name)),
          f"Role {name} deleted\n")


def _perm_lines(perms: Any, kinds: tuple[int, ...]) -> str:
    lines = []
    for p in perms:
        if p.permType not in kinds:
            continue
        key, end = out.text(p.key), out.text(p.range_end)
        if not p.range_end:
            lines.append(f"\t{key}\n")
            continue
        line = f"\t[{key}, {end})" if end != "\x00" else f"\t[{key}, <open ended>"
        if out.text(prefix_end(p.key) if p.key else b"\x00") == end:
            line += f" (prefix {key})"
        lines.append(line + "\n")
    return "".join(lines)


def _role_get(a: Args, name: str, r: Any) -> None:
    read = (authpb.Permission.READ, authpb.Permission.READWRITE)
    write = (authpb.Permission.WRITE, authpb.Permission.READWRITE)
    simple = (f"Role {name}\nKV Read:\n" + _perm_lines(r.perm, read) + "KV Write:\n"
              + _perm_lines(r.perm, write))
    fields = "".join(f'"PermType" :  {_PERM_NAME[p.permType]}\n"Key" : {out.go_quote(p.key)}'
                     f'\n"RangeEnd" : {out.go_quote(p.range_end)}\n' for p in r.perm)
    _show(a, r, simple, fields)


def run_role_get(a: Args) -> None:
    name = _one(a, "role get")
    _role_get(a, name, _call(a, "RoleGet", rpc.AuthRoleGetRequest(role=name)))


def run_role_list(a: Args) -> None:
    if a.args:
        raise bad_args("role list command requires no arguments")
    r = _call(a, "RoleList", rpc.AuthRoleListRequest())
    _show(a, r, "".join(f"{x}\n" for x in r.roles),
          '"Roles" :' + "".join(f" {out.go_quote(x)}" for x in r.roles) + "\n")


def _perm_range(a: Args, args: list[str]) -> tuple[str, str]:
    key, end = args[0], ""
    if not key:
        if a.prefix and a.from_key:
            raise bad_args("--from-key and --prefix flags are mutually exclusive")
        return "\x00", "\x00" if (a.prefix or a.from_key) else ""
    if len(args) == 1:
        if a.prefix:
            if a.from_key:
                raise bad_args("--from-key and --prefix flags are mutually exclusive")
            return key, out.text(prefix_end(key.encode("utf-8", "surrogateescape")))
        return key, "\x00" if a.from_key else ""
    if a.prefix:
        raise bad_args("unexpected endkey argument with --prefix flag")
    if a.from_key:
        raise bad_args("unexpected endkey argument with --from-key flag")
    end = args[1]
    return key, end


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def run_role_grant(a: Args) -> None:
    if len(a.args) < 3:
        raise bad_args("role grant command requires role name, permission type, and key "
                       "[endkey] as its argument")
    perm = _PERM.get(a.args[1].upper())
    if perm is None:
        raise bad_args(f"invalid permission type: {a.args[1]}")
    key, end = _perm_range(a, a.args[2:])
    r = _call(a, "RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(
        name=a.args[0], perm=authpb.Permission(permType=perm, key=_b(key),
                                               range_end=_b(end))))
    _show(a, r, f"Role {a.args[0]} updated\n")


def run_role_revoke(a: Args) -> None:
    if len(a.args) < 2:
        raise bad_args("role revoke-permission command requires role name and key [endkey] "
                       "as its argument")
    key, end = _perm_range(a, a.args[1:])
    r = _call(a, "RoleRevokePermission", rpc.AuthRoleRevokePermissionRequest(
        role=a.args[0], key=_b(key), range_end=_b(end)))
    role, k = a.args[0], a.args[1]
    if not end:
        simple = f"Permission of key {k} is revoked from role {role}\n"
    elif end != "\x00":
        simple = f"Permission of range [{k}, {end}) is revoked from role {role}\n"
    else:
        simple = f"Permission of range [{k}, <open ended> is revoked from role {role}\n"
    _show(a, r, simple)

