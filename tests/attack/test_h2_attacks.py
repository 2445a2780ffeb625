"""Denial-of-service attacks on the HTTP/2 front door of a real member, each while a
concurrent client puts: the member's RSS must stay within kit.RSS_GROWTH_MIB and the
puts must keep succeeding with p99 under kit.P99_SECONDS (the member's own time: what
the machine's load cost the put is taken off, see kit._Putter)."""

from __future__ import annotations

import os
import threading
import time

import grpc

from petcd.api.h2 import frames as F
from petcd.api.h2.hpack_codec import encode_literal
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

from .kit import P99_SECONDS, PUT, MiB, Raw, guarded, range_request, run_for


def test_hpack_cache_amplification(member: MemberProcess) -> None:
    """Distinct big header blocks (no indexing: the old block cache kept them all with
    their decoded lists), on several connections."""
    conns = [Raw(member.client_port).reading() for _ in range(4)]
    # made before the clock starts: the attacker's own CPU is not the member's latency
    calls: list[list[bytes]] = [[] for _ in conns]
    for i, c in enumerate(conns):
        for n in range(150):
            sid = 1 + 2 * n
            # ~60 KB of fields, split over HEADERS + CONTINUATION (frames <= 16 KB)
            block = c.block() + b"".join(
                encode_literal(b"x-pad-%d" % k, os.urandom(3500).hex().encode())
                for k in range(8))
            parts = [block[j:j + 16384] for j in range(0, len(block), 16384)]
            frames = [F.frame(F.HEADERS, 0, sid, parts[0])]
            frames += [F.frame(F.CONTINUATION, F.END_HEADERS if k == len(parts) - 1 else 0,
                               sid, p) for k, p in enumerate(parts[1:], 1)]
            frames.append(F.frame(F.DATA, F.END_STREAM, sid, range_request()))
            calls[i].append(b"".join(frames))
    turn = [0]

    def step() -> bool:
        i = turn[0] % len(conns)
        turn[0] += 1
        if calls[i]:
            conns[i].send(calls[i].pop(0))
        return any(calls)

    with guarded(member) as g:
        run_for(8.0, g, step, per_second=150)
    for c in conns:
        c.close()
    g.check()


def test_settings_flood_with_blocked_streams(member: MemberProcess) -> None:
    """1500 streams whose responses wait for window (the client's initial
    window is 0), then a flood of SETTINGS frames: each used to walk every stream."""
    c = Raw(member.client_port, {F.SETTINGS_INITIAL_WINDOW_SIZE: 0}).reading()
    block = c.block()
    body = range_request()
    frames = []
    for sid in range(1, 2 * 1500, 2):
        frames.append(c.headers_frame(sid, block))
        frames.append(F.frame(F.DATA, F.END_STREAM, sid, body))
    c.send(*frames)
    c.wait_headers(1500)
    settings = F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 0}) * 100
    with guarded(member) as g:
        run_for(6.0, g, lambda: c.send(settings), per_second=30)
    c.close()
    g.check()


def test_window_update_flood_with_blocked_streams(member: MemberProcess) -> None:
    """Streams blocked on the connection window (1 KB answers: 64 of them use it up),
    then 1-byte WINDOW_UPDATEs."""
    with grpc.insecure_channel(f"127.0.0.1:{member.client_port}") as ch:
        ch.unary_unary(PUT, request_serializer=lambda b: b, response_deserializer=lambda b: b)(
            rpc.PutRequest(key=b"attack", value=b"v" * 1000).SerializeToString(), timeout=10)
    c = Raw(member.client_port).reading()
    block = c.block()
    body = range_request()
    # use up the connection window with responses nobody acknowledges
    frames = []
    for sid in range(1, 2 * 1500, 2):
        frames.append(c.headers_frame(sid, block))
        frames.append(F.frame(F.DATA, F.END_STREAM, sid, body))
    c.send(*frames)
    c.wait_headers(1500)
    updates = F.window_update(0, 1) * 100
    with guarded(member) as g:
        run_for(6.0, g, lambda: c.send(updates), per_second=30)
    c.close()
    g.check()


def test_unary_body_beyond_its_message(member: MemberProcess) -> None:
    """A unary call declaring a small message, then endless DATA on its stream."""
    c = Raw(member.client_port).reading()
    c.send(c.headers_frame(1, c.block()), F.frame(F.DATA, 0, 1, range_request()))
    chunk = b"\0" * 16384
    sent = [0]

    def step() -> bool:
        if not c.take_window(len(chunk)):
            return False
        sent[0] += len(chunk)
        return c.send(F.frame(F.DATA, 0, 1, chunk))

    with guarded(member) as g:
        run_for(6.0, g, step, per_second=1000)
    c.close()
    g.check()
    assert 1 in c.headers or 1 in c.resets, "the call was neither answered nor reset"


def test_streaming_bodies_held_across_streams(member: MemberProcess) -> None:
    """Many streams each with most of a large message, never completed: what the
    member holds is bounded by the connection window, not streams x message size."""
    c = Raw(member.client_port).reading()
    block = c.block("/etcdserverpb.Watch/Watch")
    chunk = b"\0" * 16384
    sid = [1]

    def step() -> bool:
        s = sid[0]
        sid[0] += 2
        if not c.send(c.headers_frame(s, block),
                      F.frame(F.DATA, 0, s, b"\0" + (2 * MiB).to_bytes(4, "big"))):
            return False
        for _ in range(60):  # ~1 MB of the declared 2 MiB (the stream window's size)
            if not c.take_window(len(chunk), timeout=1.0):
                return True  # the member stopped giving window: back-pressure works
            c.send(F.frame(F.DATA, 0, s, chunk))
        return True

    with guarded(member) as g:
        run_for(6.0, g, step, per_second=20)
    c.close()
    g.check()


def test_ping_flood_without_reading(member: MemberProcess) -> None:
    """PINGs as fast as possible from a client that never reads: the member must not
    queue their ACKs; grpc-go's policy answers GOAWAY too_many_pings."""
    c = Raw(member.client_port, timeout=2.0, rcvbuf=4096)
    pings = F.frame(F.PING, 0, 0, b"12345678") * 4096
    with guarded(member) as g:
        run_for(6.0, g, lambda: c.send(pings))
    c.close()
    g.check()
    c2 = Raw(member.client_port).reading()
    c2.send(F.frame(F.PING, 0, 0, b"12345678") * 4)
    assert c2.wait_closed(10)
    assert c2.goaway is not None and c2.goaway[1:] == (F.ENHANCE_YOUR_CALM, b"too_many_pings")
    c2.close()


def test_settings_flood_without_reading(member: MemberProcess) -> None:
    """SETTINGS frames from a client that never reads: their ACKs must not pile up."""
    c = Raw(member.client_port, timeout=2.0, rcvbuf=4096)
    settings = F.settings_frame({}) * 8192
    with guarded(member) as g:
        run_for(6.0, g, lambda: c.send(settings))
    c.close()
    g.check()


def test_rapid_reset(member: MemberProcess) -> None:
    """HEADERS + DATA + RST_STREAM in a loop from two connections (reconnecting after
    a GOAWAY): the reset budget ends such connections, others keep being served."""
    stop = threading.Event()
    goaways: list[tuple[int, int, bytes]] = []

    def attacker() -> None:
        while not stop.is_set():
            c = Raw(member.client_port).reading()
            block = c.block()
            body = range_request()
            sid = 1
            while not stop.wait(0.1) and not c.closed.is_set():
                frames = []
                for _ in range(50):  # 500 cancelled calls a second per attacker
                    frames += [c.headers_frame(sid, block),
                               F.frame(F.DATA, F.END_STREAM, sid, body),
                               F.rst_stream(sid, F.CANCEL)]
                    sid += 2
                if not c.send(*frames):
                    break
            c.close()
            if c.goaway is not None:
                goaways.append(c.goaway)

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(2)]
    with guarded(member) as g:
        for t in threads:
            t.start()
        run_for(6.0, g, lambda: stop.wait(0.1) or True)
        stop.set()
        for t in threads:
            t.join(10)
    g.check()
    assert any(code == F.ENHANCE_YOUR_CALM for _, code, _ in goaways), goaways[:3]


def test_idle_streams_flood(member: MemberProcess) -> None:
    """Streams opened (HEADERS with 12 KB of distinct metadata, no END_STREAM) and
    never finished, 600 a second: the stream memory budget refuses them, then the
    reset budget ends the connection (GOAWAY ENHANCE_YOUR_CALM)."""
    c = Raw(member.client_port).reading()
    base = c.block()
    # made before the clock starts: the attacker's own CPU is not the member's latency
    frames = [c.headers_frame(1 + 2 * i, base + encode_literal(
        b"x-meta", os.urandom(6000).hex().encode())) for i in range(6000)]
    batches = [b"".join(frames[i:i + 300]) for i in range(0, len(frames), 300)]

    with guarded(member) as g:
        # Every batch is sent (2 a second: ~10 s; a loaded member reads them slower and
        # the sends wait) unless the member ends the connection first: the reset budget
        # refills with the member's own clock, so what it must refuse is a count of
        # streams, not a rate the machine can keep up.
        run_for(60.0, g, lambda: bool(batches) and c.send(batches.pop(0)), per_second=2)
        # ...and the GOAWAY may still be on its way
        deadline = time.monotonic() + 30
        while c.goaway is None and not c.closed.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
    c.close()
    g.check()
    assert c.goaway is not None and c.goaway[1] == F.ENHANCE_YOUR_CALM, (c.goaway,
                                                                          len(batches))


def test_guard_sees_a_member_that_stalls(member: MemberProcess) -> None:
    """The guard's latency (a put's wall time less the CPU waits the machine's load
    caused) still sees a member that makes puts wait: stopped for 300 ms twice a
    second (SIGSTOP: not runnable, so nothing of it is taken off), its p99 is far over
    the bound, loaded machine or not."""
    with guarded(member) as g:
        for _ in range(7):
            time.sleep(0.3)
            member.pause()
            time.sleep(0.3)
            member.resume()
    report = g.report()
    assert g.p99() > 2 * P99_SECONDS, report
    assert min(g.latencies) < P99_SECONDS, report  # the puts between the stops were fast
