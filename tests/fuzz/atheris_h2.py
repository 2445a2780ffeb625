"""Coverage-guided fuzzing (atheris, libFuzzer) of the sans-IO HTTP/2 connection: bytes
after the preface go into H2Connection; no exception may escape, and what it holds
stays bounded. Not part of pytest (atheris owns the process):

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python tests/fuzz/atheris_h2.py -runs=200000 -max_len=4096

(hypothesis fuzzes the same connection through the asyncio protocol in
tests/attack/test_fuzz.py, in `make test` and longer under `make soak`.)"""

from __future__ import annotations

import sys
from typing import Any

import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

with atheris.instrument_imports():
    import grpc

    from petcd.api.h2 import ServerConfig
    from petcd.api.h2 import frames as F
    from petcd.api.h2.machine import H2Connection
    from petcd.api.h2.registry import Registry
    from petcd.api.h2.status import trailers_only_block
    from petcd.api.h2.streams import HALF_CLOSED_LOCAL, H2Stream

_CONFIG = ServerConfig(max_receive_message=64 * 1024, connection_window=256 * 1024)
_REGISTRY = Registry()


async def _unused(*_a: Any) -> bytes:
    return b""


_REGISTRY.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("f.S", {
    "Echo": grpc.unary_unary_rpc_method_handler(_unused),
    "Collect": grpc.stream_unary_rpc_method_handler(_unused),
})])


class _Calls:
    """The layer above, answering as the real one does: unary calls at once, failed
    calls with their status, streaming calls by consuming what arrives."""

    def __init__(self) -> None:
        self.conn: H2Connection | None = None

    def call_started(self, stream: H2Stream, method: Any, timeout: float | None) -> None:
        stream.call = True

    def request_complete(self, stream: H2Stream, message: bytes) -> None:
        assert self.conn is not None
        if not self.conn.send_unary(stream, message):
            self.conn.send_message(stream, message)
            self.conn.end_stream(stream, b"")

    def messages_ready(self, stream: H2Stream) -> None:
        assert self.conn is not None
        msgs = stream.messages
        while msgs:
            n = len(msgs.popleft()) + 5
            stream.queued_bytes -= n
            self.conn.consumed(stream, n)

    def call_failed(self, stream: H2Stream, code: grpc.StatusCode, message: str) -> None:
        assert self.conn is not None
        if stream.state < HALF_CLOSED_LOCAL:  # not ended yet
            self.conn.trailers_only(stream, trailers_only_block(code, message))

    def stream_closed(self, stream: H2Stream, cancelled: bool) -> None:
        pass

    def writable(self, stream: H2Stream) -> None:
        pass

    def handshake_done(self) -> None:
        pass

    def ping_acked(self, payload: bytes) -> None:
        pass

    def output_ready(self) -> None:
        pass

    def pump_wanted(self) -> None:
        pass

    def connection_ended(self) -> None:
        pass


def one_input(data: bytes) -> None:
    calls = _Calls()
    clock = iter(range(10**9))
    conn = H2Connection(_CONFIG, _REGISTRY, calls, lambda: float(next(clock)) / 1000)
    calls.conn = conn
    conn.initiate()
    conn.receive_data(F.settings_frame({}))
    for i in range(0, len(data), 97):
        more = conn.receive_data(data[i:i + 97])
        while more:  # frames over one call's budget: go on with what is buffered
            more = conn.receive_data(b"")
        conn.pump_some()
        assert 0 <= conn.held <= _CONFIG.connection_window
        assert conn.stream_memory >= 0
        conn.data_to_send()
        if conn.closed:
            break


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
