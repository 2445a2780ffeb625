"""Peer transport: Raft message payloads and snapshots between the members of one cluster.

The transport moves opaque ``bytes`` addressed to member IDs (uint64); it knows nothing of Raft.
Everything runs on one asyncio loop (uvloop or the default); call every method from that loop.

API::

    t = PeerTransport(local_id, cluster_id, listen_urls, on_messages, on_snapshot=None, *,
                      server_ssl=None, client_ssl=None, config=TransportConfig(),
                      on_peer_status=None, on_rejected=None, on_request=None)
    await t.start()                      # listen on every listen URL, dial the known peers
    await t.stop()                       # close everything; queued messages are discarded
    t.bound_urls() -> list[str]          # listen URLs with the bound ports (port 0 allowed)
    t.add_peer(id, urls)                 # idempotent, like etcd; ValueError for a removed ID
    t.update_peer(id, urls)              # a connection to a URL no longer listed is redialled
    t.remove_peer(id)                    # closes connections, drops the queue, refuses the ID
    t.send(to, payloads)                 # synchronous, never blocks: queue or drop
    t.drain_unreachable() -> set[int]    # members that lost messages -> report_unreachable
    await t.send_snapshot(to, metadata, path_or_async_chunks, timeout=None) -> bool
    await t.request(id, payload, timeout=5.0) -> bytes   # one request/answer (RequestFailed)
    await peer_request(urls, payload, cluster_id=0, ...) -> bytes  # the same, before joining
    t.active_since(id) -> float | None   # time.time() the connection came up; None when down
    t.status(id) -> PeerStatus | None; t.statuses() -> dict[int, PeerStatus]
    await t.wait_active(id)

PeerStatus(id, urls, active, url, since, queued, queued_bytes, sent, dropped, last_error) is a
snapshot for dashboards and checks. TransportConfig holds the limits and timeouts (queue bounds,
backoff, dial/write/hello/snapshot timeouts, frame and chunk sizes), with LAN defaults.

Callbacks, all invoked on the loop:

* ``on_messages(payloads: list[bytes])``: every frame that one socket read completed, in the
  order the sender queued them (per connection). Must not block.
* ``await on_snapshot(from_id, metadata, chunks)``: ``chunks`` (a ``SnapshotStream``) gives
  the data in batches (``await chunks.batch()``) or chunk by chunk (``async for``), and ends
  only after the stream's length and sha256 were verified (else it raises SnapshotError).
  Return normally to acknowledge; raise to fail the sender's send_snapshot.
  Socket reads pause while ``config.snapshot_buffer`` bytes wait unconsumed.
* ``on_peer_status(id, active)``: an outgoing connection came up or went down.
* ``await on_request(from_id, payload) -> bytes``: answer one REQUEST connection (small
  out-of-band calls between members: the member list for a joining member, membership
  changes forwarded to the leader). Its hello may carry cluster/receiver ID 0 ("unknown") and
  an unknown sender; only removed senders and other clusters are refused.
* ``on_rejected(id, status, reason)``: a peer refused our handshake (``Status.REMOVED_MEMBER``
  means this member was removed from the cluster).

Behaviour:

* One outgoing TCP connection per peer carries our messages to it; the peer's messages arrive on
  connections it dials to us. send() appends to a per-peer queue bounded by message count and
  bytes; a queued flush (one per loop iteration) writes everything queued as one buffer. When a
  queue is full, or a connection dies with data in it, or a dial fails with data queued, those
  messages are dropped and the peer is recorded for drain_unreachable(): Raft retransmits.
* A peer that stops reading fills the socket and the connection's write buffer; writing then
  pauses, its queue fills and drops, and after ``write_timeout`` without progress the connection
  is cut and redialled. Other peers are never affected.
* Dials back off exponentially from ``backoff_min`` to ``backoff_max`` with jitter (each wait is
  between half and all of the computed delay); a rejected handshake waits ``backoff_max``.
* Handshake: the receiver checks protocol version, cluster ID, that it is the addressed member,
  and that the sender is a known, not removed, member; it answers with a status and a reason
  (see petcd.transport.wire) and closes the connection when it refuses.
* Snapshots travel on their own connection, in DATA frames, with backpressure both ways; the
  receiver acknowledges after its handler returned. Nothing holds a whole snapshot in memory.
* TLS: ``server_ssl`` serves https listen URLs, ``client_ssl`` dials https peer URLs;
  ``server_gate`` (petcd.tls.Gate) checks inbound peers' certificates after the handshake.
"""

from ._dial import peer_request
from ._snapchunks import SnapshotChunks, SnapshotError
from .transport import PeerTransport
from .types import (
    PeerStatus,
    PeerURL,
    RequestFailed,
    RequestHandler,
    SnapshotHandler,
    SnapshotSource,
    SnapshotStream,
    TransportConfig,
    parse_peer_url,
)
from .wire import PROTOCOL_VERSION, Status

__all__ = [
    "PROTOCOL_VERSION",
    "PeerStatus",
    "PeerTransport",
    "PeerURL",
    "RequestFailed",
    "RequestHandler",
    "SnapshotChunks",
    "SnapshotError",
    "SnapshotHandler",
    "SnapshotSource",
    "SnapshotStream",
    "Status",
    "TransportConfig",
    "parse_peer_url",
    "peer_request",
]
