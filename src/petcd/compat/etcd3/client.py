"""python-etcd3's client (`etcd3.client()`, `Etcd3Client`, `MultiEndpointEtcd3Client`)
on top of petcd.client.Client: the same methods, arguments and return shapes; failover,
safe retries, token renewal and resuming watches come from petcd.client."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from google.protobuf.message import Message

from petcd.client import calls
from petcd.client.errors import EtcdError
from petcd.client.sync import Client
from petcd.compat.etcd3 import exceptions, leases, locks, members, transactions, utils
from petcd.compat.etcd3 import watch as watch_mod
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

F = TypeVar("F", bound=Callable[..., Any])


def _handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except EtcdError as e:
            raise exceptions.translate(e) from None
    return wrapper  # type: ignore[return-value]


def _handle_generator_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            yield from fn(*a, **kw)
        except EtcdError as e:
            raise exceptions.translate(e) from None
    return wrapper  # type: ignore[return-value]


class Transactions:
    def __init__(self) -> None:
        self.value = transactions.Value
        self.version = transactions.Version
        self.create = transactions.Create
        self.mod = transactions.Mod
        self.put = transactions.Put
        self.get = transactions.Get
        self.delete = transactions.Delete
        self.txn = transactions.Txn


class KVMetadata:
    def __init__(self, keyvalue: Any, header: Any) -> None:
        self.key = keyvalue.key
        self.create_revision = keyvalue.create_revision
        self.mod_revision = keyvalue.mod_revision
        self.version = keyvalue.version
        self.lease_id = keyvalue.lease
        self.response_header = header


class Status:
    def __init__(self, version: str, db_size: int, leader: Any, raft_index: int,
                 raft_term: int) -> None:
        self.version, self.db_size, self.leader = version, db_size, leader
        self.raft_index, self.raft_term = raft_index, raft_term


class Alarm:
    def __init__(self, alarm_type: int, member_id: int) -> None:
        self.alarm_type, self.member_id = alarm_type, member_id


class Endpoint:
    """An endpoint as python-etcd3 describes one. petcd.client manages the channels; the
    failure bookkeeping (time_retry) is petcd.client's own failover."""

    def __init__(self, host: str, port: int, secure: bool = True, creds: Any = None,
                 time_retry: float = 300.0, opts: Any = None) -> None:
        self.host = host
        self.netloc = f"{host}:{port}"
        self.secure = secure
        self.protocol = "https" if secure else "http"
        if secure and creds is None:
            raise ValueError("Please set TLS credentials for secure connections")
        self.credentials = creds
        self.time_retry = time_retry
        self.opts = opts

    def __str__(self) -> str:
        return f"Endpoint({self.protocol}://{self.netloc})"


def _options(opts: Any) -> list[tuple[str, object]]:
    if opts is None:
        return []
    return list(opts.items()) if isinstance(opts, dict) else list(opts)


_SORT_ORDER = {None: "none", "ascend": "ascend", "descend": "descend"}


class MultiEndpointEtcd3Client:
    """python-etcd3's client over several endpoints. Unlike python-etcd3 (which left
    retrying to the caller), reads are retried on another member and writes only when
    they surely were not sent; `failover` is accepted for compatibility."""

    def __init__(self, endpoints: Iterable[Endpoint] | None = None,
                 timeout: float | None = None, user: str | None = None,
                 password: str | None = None, failover: bool = False, *,
                 _tls: dict[str, Any] | None = None) -> None:
        eps = list(endpoints or [])
        if not eps:
            raise ValueError("no endpoints")
        if (user is None) != (password is None):
            raise Exception("if using authentication credentials both user and password "
                            "must be specified.")
        self.endpoints = {ep.netloc: ep for ep in eps}
        self.failover = failover
        self.timeout = timeout
        opts = _options(eps[0].opts)
        tls = _tls or {}
        if eps[0].secure and not tls:
            raise ValueError("secure endpoints need ca_cert (use etcd3.client())")
        self.transactions = Transactions()
        self.petcd = Client([ep.netloc for ep in eps], user=user, password=password,
                            timeout=timeout, grpc_options=opts, **tls)
        if user is not None and password is not None:
            # python-etcd3 authenticates at once: wrong credentials fail here
            try:
                self.petcd.call(calls.authenticate(user, password))
            except EtcdError as e:
                self.petcd.close()
                raise exceptions.translate(e) from None
        self.watcher = watch_mod.Watcher(self.petcd, timeout)

    def _raw(self, method: str, request: Message, response: type[Message],
             idempotent: bool = False) -> Any:
        return self.petcd.call(calls.Call(method, request, response, lambda r: r, idempotent))

    @property
    def endpoint_in_use(self) -> Endpoint | None:
        return self.endpoints.get(self.petcd.endpoint)

    def close(self) -> None:
        self.watcher.close()
        self.petcd.close()

    def __enter__(self) -> MultiEndpointEtcd3Client:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    # -- KV

    @staticmethod
    def _range(key: Any, range_end: Any = None, limit: int | None = None,
               revision: int | None = None, sort_order: str | None = None,
               sort_target: str | None = "key", serializable: bool = False,
               keys_only: bool = False, count_only: bool = False,
               min_mod_revision: int | None = None, max_mod_revision: int | None = None,
               min_create_revision: int | None = None,
               max_create_revision: int | None = None) -> rpc.RangeRequest:
        if sort_order not in _SORT_ORDER:
            raise ValueError(f'unknown sort order: "{sort_order}"')
        targets = {None: rpc.RangeRequest.KEY, "key": rpc.RangeRequest.KEY,
                   "version": rpc.RangeRequest.VERSION, "create": rpc.RangeRequest.CREATE,
                   "mod": rpc.RangeRequest.MOD, "value": rpc.RangeRequest.VALUE}
        if sort_target not in targets:
            raise ValueError('sort_target must be one of "key", "version", "create", '
                             '"mod" or "value"')
        orders = {None: rpc.RangeRequest.NONE, "ascend": rpc.RangeRequest.ASCEND,
                  "descend": rpc.RangeRequest.DESCEND}
        # (python-etcd3 sent the create-revision bounds as min_mod_revision: a bug we
        # do not copy)
        return rpc.RangeRequest(
            key=utils.to_bytes(key),
            range_end=b"" if range_end is None else utils.to_bytes(range_end),
            limit=limit or 0, revision=revision or 0, sort_order=orders[sort_order],
            sort_target=targets[sort_target], serializable=serializable,
            keys_only=keys_only, count_only=count_only,
            min_mod_revision=min_mod_revision or 0, max_mod_revision=max_mod_revision or 0,
            min_create_revision=min_create_revision or 0,
            max_create_revision=max_create_revision or 0)

    def _range_call(self, request: rpc.RangeRequest) -> Any:
        return self._raw("/etcdserverpb.KV/Range", request, rpc.RangeResponse, True)

    @_handle_errors
    def get_response(self, key: Any, **kwargs: Any) -> Any:
        return self._range_call(self._range(key, **kwargs))

    def get(self, key: Any, **kwargs: Any) -> tuple[Any, Any]:
        r = self.get_response(key, **kwargs)
        if r.count < 1:
            return None, None
        kv = r.kvs.pop()
        return kv.value, KVMetadata(kv, r.header)

    @_handle_errors
    def get_prefix_response(self, key_prefix: Any, **kwargs: Any) -> Any:
        if any(k in kwargs for k in ("key", "range_end")):
            raise TypeError("Don't use key or range_end with prefix")
        return self._range_call(self._range(
            key_prefix, utils.prefix_range_end(utils.to_bytes(key_prefix)), **kwargs))

    def get_prefix(self, key_prefix: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        r = self.get_prefix_response(key_prefix, **kwargs)
        return ((kv.value, KVMetadata(kv, r.header)) for kv in r.kvs)

    @_handle_errors
    def get_range_response(self, range_start: Any, range_end: Any, sort_order: Any = None,
                           sort_target: str = "key", **kwargs: Any) -> Any:
        return self._range_call(self._range(range_start, range_end, sort_order=sort_order,
                                            sort_target=sort_target, **kwargs))

    def get_range(self, range_start: Any, range_end: Any,
                  **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        r = self.get_range_response(range_start, range_end, **kwargs)
        for kv in r.kvs:
            yield kv.value, KVMetadata(kv, r.header)

    @_handle_errors
    def get_all_response(self, sort_order: Any = None, sort_target: str = "key",
                         keys_only: bool = False) -> Any:
        return self._range_call(self._range(b"\0", b"\0", sort_order=sort_order,
                                            sort_target=sort_target, keys_only=keys_only))

    def get_all(self, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        r = self.get_all_response(**kwargs)
        for kv in r.kvs:
            yield kv.value, KVMetadata(kv, r.header)

    @_handle_errors
    def put(self, key: Any, value: Any, lease: Any = None, prev_kv: bool = False) -> Any:
        return self._raw("/etcdserverpb.KV/Put", rpc.PutRequest(
            key=utils.to_bytes(key), value=utils.to_bytes(value),
            lease=utils.lease_to_id(lease), prev_kv=prev_kv), rpc.PutResponse)

    @_handle_errors
    def put_if_not_exists(self, key: Any, value: Any, lease: Any = None) -> bool:
        ok, _ = self.transaction(compare=[self.transactions.create(key) == "0"],
                                 success=[self.transactions.put(key, value, lease=lease)],
                                 failure=[])
        return bool(ok)

    @_handle_errors
    def replace(self, key: Any, initial_value: Any, new_value: Any) -> bool:
        ok, _ = self.transaction(compare=[self.transactions.value(key) == initial_value],
                                 success=[self.transactions.put(key, new_value)], failure=[])
        return bool(ok)

    @_handle_errors
    def delete(self, key: Any, prev_kv: bool = False, return_response: bool = False) -> Any:
        r = self._raw("/etcdserverpb.KV/DeleteRange", rpc.DeleteRangeRequest(
            key=utils.to_bytes(key), prev_kv=prev_kv), rpc.DeleteRangeResponse)
        return r if return_response else r.deleted >= 1

    @_handle_errors
    def delete_prefix(self, prefix: Any) -> Any:
        return self._raw("/etcdserverpb.KV/DeleteRange", rpc.DeleteRangeRequest(
            key=utils.to_bytes(prefix), range_end=utils.prefix_range_end(
                utils.to_bytes(prefix))), rpc.DeleteRangeResponse)

    @_handle_errors
    def transaction(self, compare: Any, success: Any = None,
                    failure: Any = None) -> tuple[bool, list[Any]]:
        r = self._raw("/etcdserverpb.KV/Txn",
                      transactions.txn_request(compare, success, failure), rpc.TxnResponse)
        out: list[Any] = []
        for resp in r.responses:
            if resp.WhichOneof("response") == "response_range":
                out.append([(kv.value, KVMetadata(kv, r.header))
                            for kv in resp.response_range.kvs])
            else:
                out.append(resp)
        return r.succeeded, out

    @_handle_errors
    def compact(self, revision: int, physical: bool = False) -> None:
        self.petcd.compact(revision, physical=physical)

    # -- Watch

    @_handle_errors
    def add_watch_callback(self, *args: Any, **kwargs: Any) -> int:
        return self.watcher.add_callback(*args, **kwargs)

    def add_watch_prefix_callback(self, key_prefix: Any, callback: Any, **kwargs: Any) -> int:
        kwargs["range_end"] = utils.prefix_range_end(utils.to_bytes(key_prefix))
        return self.add_watch_callback(key_prefix, callback, **kwargs)

    def watch_response(self, key: Any, **kwargs: Any) -> tuple[Iterator[Any], Callable[[], None]]:
        responses: queue.Queue[Any] = queue.Queue()
        watch_id = self.add_watch_callback(key, responses.put, **kwargs)
        canceled = threading.Event()

        def cancel() -> None:
            canceled.set()
            responses.put(None)
            self.cancel_watch(watch_id)

        def iterator() -> Iterator[Any]:
            while not canceled.is_set():
                r = responses.get()
                if r is None:
                    canceled.set()
                elif isinstance(r, Exception):
                    canceled.set()
                    raise r
                elif not canceled.is_set():
                    yield r
        return iterator(), cancel

    def watch(self, key: Any, **kwargs: Any) -> tuple[Iterator[Any], Callable[[], None]]:
        it, cancel = self.watch_response(key, **kwargs)
        return utils.response_to_event_iterator(it), cancel

    def watch_prefix_response(self, key_prefix: Any, **kwargs: Any) -> Any:
        kwargs["range_end"] = utils.prefix_range_end(utils.to_bytes(key_prefix))
        return self.watch_response(key_prefix, **kwargs)

    def watch_prefix(self, key_prefix: Any, **kwargs: Any) -> Any:
        kwargs["range_end"] = utils.prefix_range_end(utils.to_bytes(key_prefix))
        return self.watch(key_prefix, **kwargs)

    def watch_once_response(self, key: Any, timeout: float | None = None,
                            **kwargs: Any) -> Any:
        responses: queue.Queue[Any] = queue.Queue()
        watch_id = self.add_watch_callback(key, responses.put, **kwargs)
        try:
            return responses.get(timeout=timeout)
        except queue.Empty:
            raise exceptions.WatchTimedOut() from None
        finally:
            self.cancel_watch(watch_id)

    def watch_once(self, key: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return self.watch_once_response(key, timeout=timeout, **kwargs).events[0]

    def watch_prefix_once_response(self, key_prefix: Any, timeout: float | None = None,
                                   **kwargs: Any) -> Any:
        kwargs["range_end"] = utils.prefix_range_end(utils.to_bytes(key_prefix))
        return self.watch_once_response(key_prefix, timeout=timeout, **kwargs)

    def watch_prefix_once(self, key_prefix: Any, timeout: float | None = None,
                          **kwargs: Any) -> Any:
        kwargs["range_end"] = utils.prefix_range_end(utils.to_bytes(key_prefix))
        return self.watch_once(key_prefix, timeout=timeout, **kwargs)

    def cancel_watch(self, watch_id: int) -> None:
        self.watcher.cancel(watch_id)

    # -- Lease and lock

    @_handle_errors
    def lease(self, ttl: int, lease_id: int | None = None) -> leases.Lease:
        g = self.petcd.lease_grant(ttl, lease_id or 0)
        return leases.Lease(lease_id=g.id, ttl=g.ttl, etcd_client=self)

    @_handle_errors
    def revoke_lease(self, lease_id: int) -> None:
        self.petcd.lease_revoke(lease_id)

    @_handle_generator_errors
    def refresh_lease(self, lease_id: int) -> Iterator[Any]:
        r = self.petcd.lease_keepalive_once(lease_id)
        yield rpc.LeaseKeepAliveResponse(ID=r.id, TTL=r.ttl, header=rpc.ResponseHeader(
            cluster_id=r.header.cluster_id, member_id=r.header.member_id,
            revision=r.header.revision, raft_term=r.header.raft_term))

    @_handle_errors
    def get_lease_info(self, lease_id: int) -> Any:
        return self._raw("/etcdserverpb.Lease/LeaseTimeToLive",
                         rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True),
                         rpc.LeaseTimeToLiveResponse, True)

    def lock(self, name: str, ttl: int = 60) -> locks.Lock:
        return locks.Lock(name, ttl=ttl, etcd_client=self)

    # -- Cluster and maintenance

    @_handle_errors
    def add_member(self, urls: Any) -> members.Member:
        m = self.petcd.member_add(list(urls)).member
        return members.Member(m.id, m.name, m.peer_urls, m.client_urls, etcd_client=self)

    @_handle_errors
    def remove_member(self, member_id: int) -> None:
        self.petcd.member_remove(member_id)

    @_handle_errors
    def update_member(self, member_id: int, peer_urls: Any) -> None:
        self.petcd.member_update(member_id, list(peer_urls))

    @property
    def members(self) -> Iterator[members.Member]:
        try:
            ms = self.petcd.member_list().members
        except EtcdError as e:
            raise exceptions.translate(e) from None
        for m in ms:
            yield members.Member(m.id, m.name, m.peer_urls, m.client_urls, etcd_client=self)

    @_handle_errors
    def status(self) -> Status:
        s = self.petcd.status()
        leader = next((m for m in self.members if m.id == s.leader), None)
        return Status(s.version, s.db_size, leader, s.raft_index, s.raft_term)

    @_handle_errors
    def defragment(self) -> None:
        self.petcd.defragment()

    @_handle_errors
    def hash(self) -> int:
        return self.petcd.hash()

    def _alarm(self, action: Any, member_id: int, alarm: Any) -> list[Alarm]:
        r = self._raw("/etcdserverpb.Maintenance/Alarm", rpc.AlarmRequest(
            action=action, memberID=member_id, alarm=alarm), rpc.AlarmResponse,
            action == rpc.AlarmRequest.GET)
        return [Alarm(a.alarm, a.memberID) for a in r.alarms]

    @_handle_errors
    def create_alarm(self, member_id: int = 0) -> list[Alarm]:
        return self._alarm(rpc.AlarmRequest.ACTIVATE, member_id, rpc.NOSPACE)

    @_handle_generator_errors
    def list_alarms(self, member_id: int = 0, alarm_type: str = "none") -> Iterator[Alarm]:
        types = {"none": rpc.NONE, "no space": rpc.NOSPACE}
        if alarm_type not in types:
            raise ValueError(f"Unknown alarm type: {alarm_type}")
        yield from self._alarm(rpc.AlarmRequest.GET, member_id, types[alarm_type])

    @_handle_errors
    def disarm_alarm(self, member_id: int = 0) -> list[Alarm]:
        return self._alarm(rpc.AlarmRequest.DEACTIVATE, member_id, rpc.NOSPACE)

    @_handle_errors
    def snapshot(self, file_obj: IO[bytes]) -> None:
        self.petcd.snapshot(file_obj)


class Etcd3Client(MultiEndpointEtcd3Client):
    """python-etcd3's single-endpoint client (what `etcd3.client()` returns)."""

    def __init__(self, host: str = "localhost", port: int = 2379, ca_cert: Any = None,
                 cert_key: Any = None, cert_cert: Any = None, timeout: float | None = None,
                 user: str | None = None, password: str | None = None,
                 grpc_options: Any = None) -> None:
        tls: dict[str, Any] = {}
        if ca_cert is not None:
            if (cert_key is None) != (cert_cert is None):
                raise ValueError("to use a secure channel ca_cert is required by itself, "
                                 "or cert_cert and cert_key must both be specified.")
            tls = {"ca_cert": ca_cert, "cert_key": cert_key, "cert_cert": cert_cert}
        elif cert_key is not None or cert_cert is not None:
            raise ValueError("to use a secure channel ca_cert is required by itself, "
                             "or cert_cert and cert_key must both be specified.")
        self.uses_secure_channel = bool(tls)
        ep = Endpoint(host, port, secure=self.uses_secure_channel,
                      creds=True if tls else None, opts=grpc_options)
        super().__init__(endpoints=[ep], timeout=timeout, user=user, password=password,
                         _tls=tls)


def client(host: str = "localhost", port: int = 2379, ca_cert: Any = None,
           cert_key: Any = None, cert_cert: Any = None, timeout: float | None = None,
           user: str | None = None, password: str | None = None,
           grpc_options: Any = None) -> Etcd3Client:
    """An Etcd3Client, as `etcd3.client()` returns."""
    return Etcd3Client(host=host, port=port, ca_cert=ca_cert, cert_key=cert_key,
                       cert_cert=cert_cert, timeout=timeout, user=user, password=password,
                       grpc_options=grpc_options)
