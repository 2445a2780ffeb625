"""The cluster described by the bootstrap flags (--initial-cluster and friends), with
member and cluster IDs derived as etcd derives them. Used once, on the first start of a
new cluster's member (server/bootstrap.py); afterwards the log holds the membership."""

from __future__ import annotations

from dataclasses import dataclass

from petcd.server.errors import BootstrapError
from petcd.server.ids import cluster_id, member_id
from petcd.server.membership import Member
from petcd.server.options import ServerOptions


@dataclass(slots=True)
class InitialCluster:
    cluster_id: int
    local_id: int
    members: dict[int, Member]

    @property
    def local(self) -> Member:
        return self.members[self.local_id]


def from_flags(opts: ServerOptions) -> InitialCluster:
    """The cluster described by --initial-cluster, checked as etcd checks it."""
    urls_by_name = {name: sorted(urls) for name, urls in opts.initial_cluster.items()}
    if not urls_by_name:
        raise BootstrapError("initial cluster unset and no discovery URL found")
    if opts.name not in urls_by_name:
        raise BootstrapError(
            f'couldn\'t find local name "{opts.name}" in the initial cluster configuration')
    advertised = sorted(opts.initial_advertise_peer_urls)
    if urls_by_name[opts.name] != advertised:
        raise BootstrapError(
            f"--initial-cluster has {opts.name}={','.join(urls_by_name[opts.name])} but "
            f"missing from --initial-advertise-peer-urls={','.join(advertised)} "
            f"({_urls_differ(advertised, urls_by_name[opts.name])})")
    members: dict[int, Member] = {}
    for name, urls in urls_by_name.items():
        mid = member_id(urls, opts.initial_cluster_token)
        if mid in members:
            raise BootstrapError(f"member count is unequal: duplicate member ID {mid:x}")
        members[mid] = Member(mid, name, urls)
    local_id = member_id(urls_by_name[opts.name], opts.initial_cluster_token)
    info = InitialCluster(cluster_id(members), local_id, members)
    info.local.client_urls = list(opts.advertise_client_urls)
    return info


def _urls_differ(a: list[str], b: list[str]) -> str:
    """etcd's detail for two URL lists that differ (both sorted)."""
    if len(a) != len(b):
        def go(urls: list[str]) -> str:
            return "[" + " ".join(f'"{u}"' for u in urls) + "]"
        return f"len({go(a)}) != len({go(b)})"
    x, y = next((x, y) for x, y in zip(a, b, strict=True) if x != y)
    return f'resolved urls: "{x}" != "{y}"'
