"""The flags around the gateway and metrics, on a real petcd process:
--listen-metrics-urls, --metrics=extensive, --enable-pprof, --enable-grpc-gateway=false,
and a streamed response cancelled when its client goes away."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from petcd.testing import PetcdProcess, free_port


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PetcdProcess, str]]:
    metrics_url = f"http://127.0.0.1:{free_port()}"
    m = PetcdProcess(tmp_path_factory.mktemp("gw-opts") / "m", args=[
        "--listen-metrics-urls", metrics_url, "--metrics", "extensive", "--enable-pprof"])
    m.start()
    try:
        yield m, metrics_url
    finally:
        m.kill()


def _samples(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            key = s.name + json.dumps(s.labels, sort_keys=True)
            out[key] = s.value
            out.setdefault(s.name, 0.0)
    return out


def test_metrics_listener(member: tuple[PetcdProcess, str]) -> None:
    m, metrics_url = member
    r = requests.post(m.endpoint + "/v3/kv/put", timeout=10,
                      data='{"key": "b3B0cw==", "value": "dg=="}')
    assert r.status_code == 200
    got = _samples(metrics_url)
    assert "grpc_server_handling_seconds_bucket" in got  # extensive
    assert "etcd_mvcc_put_total" in got
    assert requests.get(metrics_url + "/health", timeout=10).json() == {"health": "true"}
    # Only metrics and health there: no gateway, no /version.
    assert requests.post(metrics_url + "/v3/kv/range", data="{}", timeout=10).status_code \
        == 404
    assert requests.get(metrics_url + "/version", timeout=10).status_code == 404


def test_pprof(member: tuple[PetcdProcess, str]) -> None:
    m, _ = member
    r = requests.get(m.endpoint + "/debug/pprof/profile?seconds=0.3", timeout=30)
    assert r.status_code == 200 and "function calls" in r.text
    assert requests.get(m.endpoint + "/debug/pprof/", timeout=10).status_code == 200


def test_watch_cancelled_when_client_leaves(member: tuple[PetcdProcess, str]) -> None:
    m, metrics_url = member
    key = "etcd_debugging_mvcc_watch_stream_total"

    def streams() -> float:
        return _samples(metrics_url).get(key + "{}", 0.0)

    before = streams()
    host, port = m.address.split(":")
    s = socket.create_connection((host, int(port)))
    body = json.dumps({"create_request": {"key": base64.b64encode(b"opts/w").decode()}})
    s.sendall(f"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
              f"{body}".encode())
    got = b""
    s.settimeout(10)
    while b'"created":true' not in got:  # the headers and the first chunk may come apart
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert streams() == before + 1
    received = 'grpc_server_msg_received_total{"grpc_method": "Watch", ' \
        '"grpc_service": "etcdserverpb.Watch", "grpc_type": "bidi_stream"}'
    assert _samples(metrics_url)[received] >= 1
    s.close()
    deadline = time.monotonic() + 20
    while streams() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert streams() == before


def test_gateway_disabled(tmp_path_factory: pytest.TempPathFactory) -> None:
    m = PetcdProcess(tmp_path_factory.mktemp("gw-off") / "m",
                     args=["--enable-grpc-gateway=false"])
    m.start()
    try:
        r = requests.post(m.endpoint + "/v3/kv/range", data='{"key": "YQ=="}', timeout=10)
        assert (r.status_code, r.text) == (404, "404 page not found\n")
        assert requests.get(m.endpoint + "/health", timeout=10).status_code == 200
    finally:
        m.kill()


def test_gateway_on_client_http_urls_with_grpcio(tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    """--listen-client-http-urls carries the gateway; with the grpc.aio fallback server
    too (the gateway calls the handlers directly, whichever server runs gRPC)."""
    m = PetcdProcess(tmp_path_factory.mktemp("gw-http") / "m", separate_http=True,
                     args=["--experimental-grpc-server=grpcio"])
    m.start()
    try:
        r = requests.post(m.http_endpoint + "/v3/kv/put", timeout=10,
                          data='{"key": "aHR0cA==", "value": "dg=="}')
        assert r.status_code == 200, r.text
        r = requests.post(m.http_endpoint + "/v3/kv/range", data='{"key": "aHR0cA=="}',
                          timeout=10)
        assert r.json()["kvs"][0]["value"] == "dg=="
        got = _samples(m.http_endpoint)
        ok = 'grpc_server_handled_total{"grpc_code": "OK", "grpc_method": "Put", ' \
             '"grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}'
        assert got[ok] == 1
    finally:
        m.kill()
