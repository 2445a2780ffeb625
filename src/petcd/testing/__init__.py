"""Start real petcd and etcd members on free loopback ports, and run etcdctl against
them. Used by the test fixtures (tests/conftest.py) and by the benchmarks, and
documented for users' own tests (README: `petcd.testing.PetcdCluster`), which is why it
ships in the package; it starts processes and talks to them as clients do, importing
nothing of the server. Every process started here is stopped by `stop()`/`kill()`.

processes.py: one member process (petcd or etcd) and etcdctl; cluster.py: a cluster of them.
"""

from petcd.testing.cluster import (
    FAST_ELECTIONS,
    MemberStatus,
    PetcdCluster,
    Started,
    make_pki,
    member_status,
    start_members,
)
from petcd.testing.processes import (
    ETCD_BIN,
    ETCDCTL_BIN,
    GRPC_SERVER,
    LAGGING_BACKEND,
    SRC_DIR,
    Etcdctl,
    EtcdProcess,
    MemberProcess,
    PetcdProcess,
    backend_index,
    free_port,
    have_etcd,
)

__all__ = [
    "ETCDCTL_BIN",
    "ETCD_BIN",
    "FAST_ELECTIONS",
    "GRPC_SERVER",
    "LAGGING_BACKEND",
    "SRC_DIR",
    "EtcdProcess",
    "Etcdctl",
    "MemberProcess",
    "MemberStatus",
    "PetcdCluster",
    "PetcdProcess",
    "Started",
    "backend_index",
    "free_port",
    "have_etcd",
    "make_pki",
    "member_status",
    "start_members",
]
