"""The cluster described by the bootstrap flags (--initial-cluster and friends), with
member and cluster IDs derived as etcd derives them. Used once, on the first start of a
new cluster's member (server/bootstrap.py); afterwards the log holds the membership."""

from __future__ import annotations

from dataclasses import dataclass, field

from petcd.server.ids import cluster_id, member_id
from petcd.server.options import ServerOptions


class BootstrapError(Exception):
    """The bootstrap flags do not describe a cluster this member belongs to."""


@dataclass(slots=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False


@dataclass(slots=True)
class ClusterInfo:
    cluster_id: int
    local_id: int
    members: dict[int, MemberInfo]

    @property
    def local(self) -> MemberInfo:
        return self.members[self.local_id]


def bootstrap(opts: ServerOptions) -> ClusterInfo:
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
            f"missing from --initial-advertise-peer-urls={','.join(advertised)}")
    members: dict[int, MemberInfo] = {}
    for name, urls in urls_by_name.items():
        mid = member_id(urls, opts.initial_cluster_token)
        if mid in members:
            raise BootstrapError(f"member count is unequal: duplicate member ID {mid:x}")
        members[mid] = MemberInfo(mid, name, urls)
    local_id = member_id(urls_by_name[opts.name], opts.initial_cluster_token)
    info = ClusterInfo(cluster_id(members), local_id, members)
    info.local.client_urls = list(opts.advertise_client_urls)
    return info
