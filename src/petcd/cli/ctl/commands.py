"""etcdctl 3.4's command tree: names, usage lines, short help and flags (with their
defaults and help as etcdctl prints them). Each runnable command names the
"module:function" that runs it; nothing here imports gRPC."""

from __future__ import annotations

from petcd.cli.ctl.cmd import Command, Flag

GET_FLAGS = (
    Flag("consistency", "str", "l", "Linearizable(l) or Serializable(s)"),
    Flag("order", "str", "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    Flag("sort-by", "str", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    Flag("limit", "int", 0, "Maximum number of results"),
    Flag("prefix", "bool", False, "Get keys with matching prefix"),
    Flag("from-key", "bool", False, "Get keys that are greater than or equal to the given "
         "key using byte compare"),
    Flag("rev", "int", 0, "Specify the kv revision"),
    Flag("keys-only", "bool", False, "Get only the keys"),
    Flag("print-value-only", "bool", False,
         'Only write values when using the "simple" output format'),
)
PUT_FLAGS = (
    Flag("lease", "str", "0", "lease ID (in hexadecimal) to attach to the key"),
    Flag("prev-kv", "bool", False, "return the previous key-value pair before modification"),
    Flag("ignore-value", "bool", False, "updates the key using its current value"),
    Flag("ignore-lease", "bool", False, "updates the key using its current lease"),
)
DEL_FLAGS = (
    Flag("prefix", "bool", False, "delete keys with matching prefix"),
    Flag("prev-kv", "bool", False, "return deleted key-value pairs"),
    Flag("from-key", "bool", False, "delete keys that are greater than or equal to the given "
         "key using byte compare"),
)

_CLUSTER = Flag("cluster", "bool", False, "use all endpoints from the cluster member list")
_LOAD = ("The {}'s workload model. Accepted workloads: s(small), m(medium), l(large), "
         "xl(xLarge)")
_COMPACT = Flag("auto-compact", "bool", False,
                "Compact storage with last revision after test is finished.")
_DEFRAG = Flag("auto-defrag", "bool", False, "Defragment storage after test is finished.")


def _c(name: str, short: str, usage: str, run: str, *flags: Flag, long: str = ""
       ) -> Command:
    return Command(name, short, usage=usage, run=run, flags=flags, long=long)


def _group(name: str, short: str, *subs: Command, flags: tuple[Flag, ...] = (),
           usage: str = "") -> Command:
    return Command(name, short, usage=usage or f"{name} <subcommand>",
                   subcommands=list(subs), flags=flags)


_PUT_LONG = """Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>."""
_LIST_LONG = ("When --write-out is set to simple, this command prints out comma-separated "
              "{} lists for each endpoint.\nThe items in the lists are {}.")


ROOT = Command("etcdctl", "A simple command line client for etcd3.", subcommands=[
    _c("get", "Gets the key or a range of keys", "get [options] <key> [range_end]",
       "kv:run_get", *GET_FLAGS),
    _c("put", "Puts the given key into the store",
       "put [options] <key> <value> (<value> can also be given from stdin)", "kv:run_put",
       *PUT_FLAGS, long=_PUT_LONG),
    _c("del", "Removes the specified key or range of keys [key, range_end)",
       "del [options] <key> [range_end]", "kv:run_del", *DEL_FLAGS),
    _c("txn", "Txn processes all the requests in one transaction", "txn [options]",
       "kv:run_txn", Flag("interactive", "bool", False,
                          "Input transaction in interactive mode", short="i")),
    _c("compaction", "Compacts the event history in etcd", "compaction [options] <revision>",
       "kv:run_compaction", Flag("physical", "bool", False, "'true' to wait for compaction "
                                 "to physically remove all old revisions")),
    _c("watch", "Watches events stream on keys or prefixes",
       "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
       "watch:run_watch",
       Flag("interactive", "bool", False, "Interactive mode", short="i"),
       Flag("prefix", "bool", False, "Watch on a prefix if prefix is set"),
       Flag("rev", "int", 0, "Revision to start watching"),
       Flag("prev-kv", "bool", False,
            "get the previous key-value pair before the event happens")),
    _group("lease", "Lease related commands",
           _c("grant", "Creates leases", "lease grant <ttl>", "lease:run_grant"),
           _c("revoke", "Revokes leases", "lease revoke <leaseID>", "lease:run_revoke"),
           _c("timetolive", "Get lease information", "lease timetolive <leaseID> [options]",
              "lease:run_timetolive",
              Flag("keys", "bool", False, "Get keys attached to this lease")),
           _c("list", "List all active leases", "lease list", "lease:run_list"),
           _c("keep-alive", "Keeps leases alive (renew)",
              "lease keep-alive [options] <leaseID>", "lease:run_keep_alive",
              Flag("once", "bool", False, "Resets the keep-alive time to its original value "
                   "and exits immediately"))),
    _group("member", "Membership related commands",
           _c("add", "Adds a member into the cluster", "member add <memberName> [options]",
              "cluster:run_member_add",
              Flag("peer-urls", "str", "", "comma separated peer URLs for the new member."),
              Flag("learner", "bool", False, "indicates if the new member is raft learner")),
           _c("remove", "Removes a member from the cluster", "member remove <memberID>",
              "cluster:run_member_remove"),
           _c("update", "Updates a member in the cluster",
              "member update <memberID> [options]", "cluster:run_member_update",
              Flag("peer-urls", "str", "",
                   "comma separated peer URLs for the updated member.")),
           _c("list", "Lists all members in the cluster", "member list",
              "cluster:run_member_list", long=_LIST_LONG.format(
                  "member", "ID, Status, Name, Peer Addrs, Client Addrs, Is Learner")),
           _c("promote", "Promotes a non-voting member in the cluster",
              "member promote <memberID>", "cluster:run_member_promote",
              long="Promotes a non-voting learner member to a voting one in the cluster.")),
    _group("endpoint", "Endpoint related commands",
           _c("health", "Checks the healthiness of endpoints specified in `--endpoints` flag",
              "endpoint health", "cluster:run_health"),
           _c("status", "Prints out the status of endpoints specified in `--endpoints` flag",
              "endpoint status", "cluster:run_status", long=_LIST_LONG.format(
                  "status", "endpoint, ID, version, db size, is leader, is learner, raft "
                  "term, raft index, raft applied index, errors")),
           _c("hashkv", "Prints the KV history hash for each endpoint in --endpoints",
              "endpoint hashkv", "cluster:run_hashkv",
              Flag("rev", "int", 0, "maximum revision to hash (default: all revisions)")),
           flags=(_CLUSTER,)),
    _group("alarm", "Alarm related commands",
           _c("disarm", "Disarms all alarms", "alarm disarm", "cluster:run_alarm_disarm"),
           _c("list", "Lists all alarms", "alarm list", "cluster:run_alarm_list")),
    _c("defrag", "Defragments the storage of the etcd members with given endpoints",
       "defrag", "cluster:run_defrag", _CLUSTER,
       Flag("data-dir", "str", "",
            "Optional. If present, defragments a data directory not in use by etcd.")),
    _c("move-leader", "Transfers leadership to another etcd cluster member.",
       "move-leader <transferee-member-id>", "cluster:run_move_leader"),
    _c("version", "Prints the version of etcdctl", "version", "cluster:run_version"),
    _c("lock", "Acquires a named lock", "lock <lockname> [exec-command arg1 arg2 ...]",
       "recipes:run_lock", Flag("ttl", "int", 10, "timeout for session")),
    _c("elect", "Observes and participates in leader election",
       "elect <election-name> [proposal]", "recipes:run_elect",
       Flag("listen", "bool", False, "observation mode", short="l")),
    _group("auth", "Enable or disable authentication",
           _c("enable", "Enables authentication", "auth enable", "auth:run_auth_enable"),
           _c("disable", "Disables authentication", "auth disable", "auth:run_auth_disable"),
           Command("status", "Returns authentication status", usage="auth status",
                   run="auth:run_auth_status", hidden=True),  # etcdctl 3.5's
           usage="auth <enable or disable>"),
    _group("user", "User related commands",
           _c("add", "Adds a new user", "user add <user name or user:password> [options]",
              "auth:run_user_add",
              Flag("interactive", "bool", True,
                   "Read password from stdin instead of interactive terminal"),
              Flag("new-user-password", "str", "",
                   "Supply password from the command line flag"),
              Flag("no-password", "bool", False,
                   "Create a user without password (CN based auth only)")),
           _c("delete", "Deletes a user", "user delete <user name>", "auth:run_user_delete"),
           _c("get", "Gets detailed information of a user", "user get <user name> [options]",
              "auth:run_user_get",
              Flag("detail", "bool", False, "Show permissions of roles granted to the user")),
           _c("list", "Lists all users", "user list", "auth:run_user_list"),
           _c("passwd", "Changes password of user", "user passwd <user name> [options]",
              "auth:run_user_passwd",
              Flag("interactive", "bool", True, "If true, read password from stdin instead "
                   "of interactive terminal")),
           _c("grant-role", "Grants a role to a user",
              "user grant-role <user name> <role name>", "auth:run_user_grant"),
           _c("revoke-role", "Revokes a role from a user",
              "user revoke-role <user name> <role name>", "auth:run_user_revoke")),
    _group("role", "Role related commands",
           _c("add", "Adds a new role", "role add <role name>", "auth:run_role_add"),
           _c("delete", "Deletes a role", "role delete <role name>", "auth:run_role_delete"),
           _c("get", "Gets detailed information of a role", "role get <role name>",
              "auth:run_role_get"),
           _c("list", "Lists all roles", "role list", "auth:run_role_list"),
           _c("grant-permission", "Grants a key to a role",
              "role grant-permission [options] <role name> <permission type> <key> [endkey]",
              "auth:run_role_grant",
              Flag("prefix", "bool", False, "grant a prefix permission"),
              Flag("from-key", "bool", False, "grant a permission of keys that are greater "
                   "than or equal to the given key using byte compare")),
           _c("revoke-permission", "Revokes a key from a role",
              "role revoke-permission <role name> <key> [endkey]", "auth:run_role_revoke",
              Flag("prefix", "bool", False, "revoke a prefix permission"),
              Flag("from-key", "bool", False, "revoke a permission of keys that are greater "
                   "than or equal to the given key using byte compare"))),
    _group("check", "commands for checking properties of the etcd cluster",
           _c("perf", "Check the performance of the etcd cluster", "check perf [options]",
              "check:run_perf",
              Flag("load", "str", "s", _LOAD.format("performance check")),
              Flag("prefix", "str", "/etcdctl-check-perf/",
                   "The prefix for writing the performance check's keys."),
              _COMPACT, _DEFRAG),
           _c("datascale", "Check the memory usage of holding data for different workloads "
              "on a given server endpoint.", "check datascale [options]",
              "check:run_datascale",
              Flag("load", "str", "s", _LOAD.format("datascale check")),
              Flag("prefix", "str", "/etcdctl-check-datascale/",
                   "The prefix for writing the datascale check's keys."),
              _COMPACT, _DEFRAG, long="If no endpoint is provided, localhost will be used. "
              "If multiple endpoints are provided, first endpoint will be used.")),
    _c("make-mirror", "Makes a mirror at the destination etcd cluster",
       "make-mirror [options] <destination>", "mirror:run_make_mirror",
       Flag("prefix", "str", "", "Key-value prefix to mirror"),
       Flag("dest-prefix", "str", "", "destination prefix to mirror a prefix to a different "
            "prefix in the destination cluster"),
       Flag("no-dest-prefix", "bool", False,
            "mirror key-values to the root of the destination cluster"),
       Flag("dest-cert", "str", "",
            "Identify secure client using this TLS certificate file for the destination "
            "cluster"),
       Flag("dest-key", "str", "", "Identify secure client using this TLS key file"),
       Flag("dest-cacert", "str", "",
            "Verify certificates of TLS enabled secure servers using this CA bundle"),
       Flag("dest-insecure-transport", "bool", True,
            "Disable transport security for client connections")),
    _c("migrate", "Migrates keys in a v2 store to a mvcc store", "migrate",
       "cluster:run_unsupported",
       Flag("data-dir", "str", "", "Path to the data directory"),
       Flag("wal-dir", "str", "", "Path to the WAL directory"),
       Flag("no-ttl", "bool", False, "Do not convert TTL keys"),
       Flag("transformer", "str", "", "Path to the user-provided transformer program")),
    Command("completion", "Generate the autocompletion script for the specified shell",
            usage="completion", long="Generate the autocompletion script for etcdctl for "
            "the specified shell.\nSee each sub-command's help for details on how to use "
            "the generated script.", subcommands=[
                _c(sh, f"Generate the autocompletion script for {sh}", f"completion {sh}",
                   "cluster:run_unsupported") for sh in ("bash", "fish", "powershell", "zsh")]),
    _c("help", "Help about any command", "help [command]", "cluster:run_help",
       long="Help provides help for any command in the application.\nSimply type etcdctl "
       "help [path to command] for full details."),
    # snapshot status/restore run through the argparse-based module (snapshot.py)
    _group("snapshot", "Manages etcd node snapshots",
           _c("save", "Stores an etcd node backend snapshot to a given file",
              "snapshot save <filename>", "snapshot_save:run_save"),
           _c("status", "Gets backend snapshot status of a given file",
              "snapshot status <filename>", "snapshot", long=_LIST_LONG.format(
                  "status", "hash, revision, total keys, total size")),
           _c("restore", "Restores an etcd member snapshot to an etcd directory",
              "snapshot restore <filename> [options]", "snapshot",
              Flag("data-dir", "str", "", "Path to the data directory"),
              Flag("wal-dir", "str", "",
                   "Path to the WAL directory (use --data-dir if none given)"),
              Flag("initial-cluster", "str", "default=http://localhost:2380",
                   "Initial cluster configuration for restore bootstrap"),
              Flag("initial-cluster-token", "str", "etcd-cluster",
                   "Initial cluster token for the etcd cluster during restore bootstrap"),
              Flag("initial-advertise-peer-urls", "str", "http://localhost:2380",
                   "List of this member's peer URLs to advertise to the rest of the cluster"),
              Flag("name", "str", "default", "Human-readable name for this member"),
              Flag("skip-hash-check", "bool", False, "Ignore snapshot integrity hash value "
                   "(required if copied from data directory)"))),
])
