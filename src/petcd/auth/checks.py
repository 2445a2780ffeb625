"""Which permissions a request needs, as etcd checks them (etcdserver's auth applier
and v3 server): reads need READ on their range, writes WRITE; a put or delete asking
for prev_kv also needs READ; a txn needs READ on every compare and every permission
of every operation of both branches (nested txns too); revoking a lease, or attaching
a key to one, needs WRITE on every key already attached to it.

Each function returns the EtcdError to answer, or None when the request may go on.
`user`/`rev` are who asked and the auth revision their check is made at (0: nobody
logged in)."""

from __future__ import annotations

from collections.abc import Iterable

from petcd import errors
from petcd.auth.store import AuthStore
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

Result = EtcdError | None


def permitted(store: AuthStore, user: str, rev: int, key: bytes, range_end: bytes,
              write: bool) -> Result:
    """etcd's isOpPermitted (with auth enabled)."""
    if rev == 0:
        return errors.USER_EMPTY()
    if rev < store.revision:
        return errors.AUTH_OLD_REVISION()
    perms = store.perms(user)
    if perms is None:
        return None  # the root role may do anything
    if perms is False:
        return errors.PERMISSION_DENIED()
    assert not isinstance(perms, bool)
    ok = (perms.write if write else perms.read).covers(key, range_end)
    return None if ok else errors.PERMISSION_DENIED()


def check_range(store: AuthStore, user: str, rev: int, req: rpc.RangeRequest) -> Result:
    return permitted(store, user, rev, req.key, req.range_end, False)


def check_put(store: AuthStore, user: str, rev: int, req: rpc.PutRequest) -> Result:
    err = permitted(store, user, rev, req.key, b"", True)
    if err is None and req.prev_kv:
        err = permitted(store, user, rev, req.key, b"", False)
    return err


def check_delete(store: AuthStore, user: str, rev: int, req: rpc.DeleteRangeRequest) -> Result:
    err = permitted(store, user, rev, req.key, req.range_end, True)
    if err is None and req.prev_kv:
        err = permitted(store, user, rev, req.key, req.range_end, False)
    return err


def check_txn(store: AuthStore, user: str, rev: int, req: rpc.TxnRequest) -> Result:
    for c in req.compare:
        err = permitted(store, user, rev, c.key, c.range_end, False)
        if err is not None:
            return err
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            err = check_range(store, user, rev, op.request_range)
        elif which == "request_put":
            err = permitted(store, user, rev, op.request_put.key, b"", True)
        elif which == "request_delete_range":
            err = check_delete(store, user, rev, op.request_delete_range)
        elif which == "request_txn":
            err = check_txn(store, user, rev, op.request_txn)
        else:
            err = None
        if err is not None:
            return err
    return None


def check_keys_writable(store: AuthStore, user: str, rev: int, keys: Iterable[bytes]) -> Result:
    """WRITE on each key (the keys attached to a lease being revoked or extended)."""
    for key in keys:
        err = permitted(store, user, rev, key, b"", True)
        if err is not None:
            return err
    return None


def check_admin(store: AuthStore, user: str) -> Result:
    return store.is_admin(user)
