"""python-etcd3 (the `etcd3` package) on petcd.client: code written for `etcd3` runs
unchanged after `import petcd.compat.etcd3 as etcd3`. See README.md ("python-etcd3
compatibility") for what differs."""

from petcd.compat.etcd3 import etcdrpc
from petcd.compat.etcd3.client import (
    Endpoint,
    Etcd3Client,
    MultiEndpointEtcd3Client,
    Transactions,
    client,
)
from petcd.compat.etcd3.exceptions import Etcd3Exception
from petcd.compat.etcd3.leases import Lease
from petcd.compat.etcd3.locks import Lock
from petcd.compat.etcd3.members import Member

__version__ = "0.12.0"

__all__ = ["Endpoint", "Etcd3Client", "Etcd3Exception", "Lease", "Lock", "Member",
           "MultiEndpointEtcd3Client", "Transactions", "client", "etcdrpc"]
