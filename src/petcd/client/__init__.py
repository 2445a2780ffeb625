"""petcd's Python client for etcd v3 (petcd and etcd 3.4/3.5): `Client` (blocking) and
`AsyncClient` (asyncio) with the same methods, typed results, one exception hierarchy
(petcd.client.errors), failover between members, watches that resume without gaps or
repeats, and recipes (petcd.client.recipes: locks, elections, STM, queues, barriers).

    from petcd.client import Client
    with Client("127.0.0.1:2379") as c:
        c.put("k", "v")
        assert c.get("k").value == b"v"

This package imports only petcd.pb and third-party libraries, never the server.
"""

from petcd.client.aio import AsyncClient
from petcd.client.errors import (
    CompactedError,
    ConnectionFailedError,
    EtcdError,
    LeaseExpiredError,
    PermissionDeniedError,
)
from petcd.client.ops import (
    Compare,
    CreateRevision,
    Delete,
    Get,
    LeaseId,
    ModRevision,
    Put,
    Txn,
    Value,
    Version,
    prefix_end,
)
from petcd.client.sync import Client
from petcd.client.types import (
    Event,
    EventType,
    GetResult,
    Header,
    KeyValue,
    PermissionType,
    PutResult,
    TxnResult,
    WatchResponse,
)

__all__ = [
    "AsyncClient", "Client", "CompactedError", "Compare", "ConnectionFailedError", "CreateRevision",
    "Delete", "EtcdError", "Event", "EventType", "Get", "GetResult", "Header", "KeyValue",
    "LeaseExpiredError", "LeaseId", "ModRevision", "PermissionDeniedError", "PermissionType",
    "Put", "PutResult", "Txn", "TxnResult", "Value", "Version", "WatchResponse", "prefix_end",
]
