"""One-shot connections to a peer: a REQUEST and its answer, and the DATA frames a snapshot
is streamed in."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Sequence

from .types import (
    Hasher,
    MiB,
    PeerURL,
    Rejected,
    RequestFailed,
    SnapshotSource,
    describe,
    parse_peer_url,
)
from .wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    REPLY,
    SNAP_END,
    SNAP_FRAME_HEADER,
    SNAP_RESULT,
    Hello,
    Kind,
    ProtocolError,
    Reply,
    SnapFrame,
    Status,
)

log = logging.getLogger("petcd.transport")


async def peer_request(
    urls: Sequence[str],
    payload: bytes,
    *,
    cluster_id: int = 0,
    from_id: int = 0,
    to_id: int = 0,
    client_ssl: ssl.SSLContext | None = None,
    timeout: float = 5.0,
    max_frame: int = 64 * MiB,
) -> bytes:
    """One request to whichever of `urls` answers first (tried in order, `timeout` each).
    IDs may be 0 when not known (a member that has not joined yet)."""
    errors: list[str] = []
    status: Status | None = None
    for text in urls:
        url = parse_peer_url(text)
        if url.tls and client_ssl is None:
            errors.append(f"{text}: https needs a client TLS context")
            continue
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    url.host,
                    url.port,
                    ssl=client_ssl if url.tls else None,
                    server_hostname=url.host if url.tls else None,
                )
                hello = Hello(PROTOCOL_VERSION, Kind.REQUEST, cluster_id, from_id, to_id)
                writer.write(hello.encode() + FRAME_HEADER.pack(len(payload)) + payload)
                head = await reader.readexactly(REPLY.size)
                code, _, rlen, _, _ = REPLY.unpack(head)
                reason = (await reader.readexactly(rlen)).decode(errors="replace")
                if code != Status.OK:
                    try:
                        status = Status(code)
                    except ValueError:
                        status = Status.NOT_ACCEPTED
                    errors.append(f"{text}: {reason or status.text}")
                    continue
                (n,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
                if n > max_frame:
                    raise ProtocolError(f"answer of {n} bytes exceeds the limit")
                return await reader.readexactly(n)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError) as exc:
            errors.append(f"{text}: {describe(exc)}")
        finally:
            if writer is not None:
                writer.close()
    raise RequestFailed("; ".join(errors) or "no peer URL to ask", status)


async def snapshot_frames(
    source: SnapshotSource, chunk_size: int, sha: Hasher
) -> AsyncGenerator[tuple[list[bytes | bytearray], int], None]:
    """DATA frames (as buffers to write) and their payload sizes, hashing on the way."""
    if isinstance(source, (str, os.PathLike, io.RawIOBase)):
        loop = asyncio.get_running_loop()
        # A path is opened here; a raw stream (e.g. a pipe a producer writes into) is read
        # until EOF and left to its owner to close.
        with (open(source, "rb", buffering=0) if isinstance(source, (str, os.PathLike))
              else contextlib.nullcontext(source)) as f:
            while True:  # reads and hashing happen in a thread
                frame = await loop.run_in_executor(None, _read_data_frame, f, chunk_size, sha)
                if frame is None:
                    return
                yield [frame], len(frame) - SNAP_FRAME_HEADER.size
    else:
        async for chunk in source:
            if chunk:
                sha.update(chunk)
                yield [SNAP_FRAME_HEADER.pack(1 + len(chunk), SnapFrame.DATA), chunk], len(chunk)


def _read_data_frame(f: io.RawIOBase, chunk_size: int, sha: Hasher) -> bytearray | None:
    """Read one chunk straight into a DATA frame buffer and hash it (runs in a thread).
    Fills the chunk unless EOF comes first (a pipe gives at most its buffer per read)."""
    head = SNAP_FRAME_HEADER.size
    frame = bytearray(head + chunk_size)
    n = 0
    with memoryview(frame) as view:
        while n < chunk_size:
            got = f.readinto(view[head + n :])
            if not got:
                break
            n += got
        if not n:
            return None
        sha.update(view[head : head + n])
    if n < chunk_size:
        del frame[head + n :]
    SNAP_FRAME_HEADER.pack_into(frame, 0, 1 + n, SnapFrame.DATA)
    return frame


async def stream_snapshot(
    to: int,
    url: PeerURL,
    metadata: bytes,
    source: SnapshotSource,
    *,
    ssl_for: Callable[[PeerURL], ssl.SSLContext | None],
    hello: bytes,
    dial_timeout: float,
    stall: float,
    chunk_size: int,
    on_rejected: Callable[[Reply], None],
) -> bool:
    """Send one snapshot on its own connection (see PeerTransport.send_snapshot)."""
    started = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(dial_timeout):
            ssl_ctx = ssl_for(url)
            reader, writer = await asyncio.open_connection(
                url.host,
                url.port,
                ssl=ssl_ctx,
                server_hostname=url.host if ssl_ctx is not None else None,
            )
            writer.write(hello)
            head = await reader.readexactly(REPLY.size)
            status, _, rlen, cluster_id, member_id = REPLY.unpack(head)
            reason = (await reader.readexactly(rlen)).decode(errors="replace")
        if status != Status.OK:
            reply = Reply(status, cluster_id, member_id, reason)
            on_rejected(reply)
            raise Rejected(reply)
        writer.writelines([SNAP_FRAME_HEADER.pack(1 + len(metadata), SnapFrame.META), metadata])
        sha = hashlib.sha256()
        total = 0
        frames = snapshot_frames(source, chunk_size, sha)
        async with contextlib.aclosing(frames):
            async for frame, size in frames:
                writer.writelines(frame)
                total += size
                async with asyncio.timeout(stall):
                    await writer.drain()
        end = SNAP_END.pack(total, sha.digest())
        writer.write(SNAP_FRAME_HEADER.pack(1 + len(end), SnapFrame.END) + end)
        async with asyncio.timeout(stall):
            await writer.drain()
            result = await reader.readexactly(SNAP_RESULT.size)
            ok, rlen = SNAP_RESULT.unpack(result)
            reason = (await reader.readexactly(rlen)).decode(errors="replace")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, Rejected) as exc:
        log.warning("failed to send snapshot to %x: %s", to, describe(exc))
        return False
    finally:
        if writer is not None:
            writer.close()
    if ok != 0:
        log.warning("member %x failed to receive the snapshot: %s", to, reason)
        return False
    log.info("sent snapshot of %d bytes to %x in %.2fs", total, to, time.monotonic() - started)
    return True
