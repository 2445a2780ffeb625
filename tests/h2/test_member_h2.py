"""A real petcd member with --experimental-grpc-server=h2: etcdctl (Go gRPC) and grpcio
clients, HTTP/1.1 endpoints on the client port, limits, and a SIGTERM while calls are in
flight. (The whole e2e suite runs on this server with PETCD_TEST_GRPC_SERVER=h2.)"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import Etcdctl, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcdctl 3.4 not installed")


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    m = PetcdProcess(tmp_path_factory.mktemp("h2-member") / "m",
                     args=["--experimental-grpc-server=h2", "--max-request-bytes", "4096"])
    try:
        m.start()
        yield m
    except BaseException:
        print(m.log_tail())
        raise
    finally:
        m.kill()


def test_etcdctl(member: PetcdProcess) -> None:
    ctl = Etcdctl(member.endpoint)
    assert ctl.ok("put", "h2/a", "1").strip() == "OK"
    assert ctl.ok("put", "h2/b", "2").strip() == "OK"
    assert ctl.ok("get", "h2/", "--prefix").split() == ["h2/a", "1", "h2/b", "2"]
    out = ctl.ok("txn", input="value(\"h2/a\") = \"1\"\n\nput h2/c 3\n\nput h2/c 4\n\n")
    assert out.split()[:2] == ["SUCCESS", "OK"]
    assert ctl.ok("del", "h2/", "--prefix").strip() == "3"
    r = ctl("put", "", "x")
    assert r.returncode != 0 and "key is not provided" in r.stderr
    status = json.loads(ctl.ok("endpoint", "status", "-w", "json"))
    assert status[0]["Status"]["header"]["member_id"]


def test_http_on_the_client_port(member: PetcdProcess) -> None:
    with urllib.request.urlopen(member.endpoint + "/health", timeout=5) as r:
        assert json.loads(r.read()) == {"health": "true"}
    with urllib.request.urlopen(member.endpoint + "/version", timeout=5) as r:
        assert "etcdserver" in json.loads(r.read())


def test_grpc_limits_and_errors(member: PetcdProcess) -> None:
    with grpc.insecure_channel(member.address) as ch:
        put = ch.unary_unary("/etcdserverpb.KV/Put")
        with pytest.raises(grpc.RpcError) as e:
            put(rpc.PutRequest(key=b"k", value=b"v" * 5000).SerializeToString(), timeout=10)
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
        with pytest.raises(grpc.RpcError) as e:
            put(rpc.PutRequest(key=b"k", value=b"v" * (600 * 1024)).SerializeToString(),
                timeout=10)
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/petcdtest.Nowhere/Call")(b"", timeout=10)
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.UNIMPLEMENTED, "unknown service petcdtest.Nowhere")


def test_sigterm_lets_calls_in_flight_finish(tmp_path_factory: pytest.TempPathFactory) -> None:
    m = PetcdProcess(tmp_path_factory.mktemp("h2-stop") / "m",
                     args=["--experimental-grpc-server=h2"])
    try:
        m.start()
        with grpc.insecure_channel(m.address) as ch:
            put = ch.unary_unary("/etcdserverpb.KV/Put")
            reqs = [rpc.PutRequest(key=b"s%d" % i, value=b"v").SerializeToString()
                    for i in range(300)]
            # connected first: else SIGTERM can close the listener before the channel's
            # lazy connect, and no call is ever in flight (all UNAVAILABLE)
            put(reqs[0], timeout=10)

            def call(req: bytes) -> str:
                try:
                    put(req, timeout=10)
                    return "ok"
                except grpc.RpcError as e:
                    return e.code().name

            with ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(call, r) for r in reqs]
                assert m.stop() == 0
                outcomes = [f.result() for f in futures]
        # Every call either succeeded or was never served (the server was gone): none
        # was cut off in the middle with an internal error.
        assert set(outcomes) <= {"ok", "UNAVAILABLE"}, set(outcomes)
        assert "ok" in outcomes
    finally:
        m.kill()
