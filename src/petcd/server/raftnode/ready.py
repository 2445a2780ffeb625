"""The Ready loop: one asyncio task driving petcd.raft.RawNode through its contract (the
numbered list in raft/rawnode.py):

    proposals queued since the last Ready ──propose_batch──> RawNode
    rd = ready()
      soft state      leader changes: listeners, metrics, pending reads fail
      send first      if rd.send_before_persist (a leader streams while it writes)
      persist         WalWriter.save(hard state, entries, snapshot): one WAL frame, one
                      fdatasync (native AIO, or the WAL thread); then the in-memory Raft
                      storage. With PETCD_WAL_PIPELINE a lone voter's plain Ready
                      is pipelined instead (pipeline.py): written, its fdatasync
                      started, advanced at once; its committed entries handed out when
                      the fdatasync returns
      send            the other messages (snapshots go on their own connection)
      hand out        committed entries -> apply queue (handout.py: conf changes are
                      applied to Raft, the member list and the transport there, in log order)
      read states     ReadIndex answers
      advance
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from petcd.raft import Entry, EntryType, Ready
from petcd.server import proposal as P
from petcd.server.raftnode import crashpoints
from petcd.server.raftnode.handout import committed_batch
from petcd.server.raftnode.pipeline import WalPipeline
from petcd.server.raftnode.walwriter import LoneSave

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

_NORMAL = EntryType.NORMAL
_OVERLAPPABLE = frozenset({P.PUT, P.DELETE_RANGE, P.TXN})

# Seconds a leader holds back a commit index advance that no append carried (Raft's
# Config.defer_commit): a write that follows within it carries the index to the
# followers in its own append, so under a stream of lone writes each follower is woken
# and answers once per write, not twice. Followers learn of a last write this much
# later (their serializable reads, their watchers). PETCD_COMMIT_DEFER_MS sets it; 0:
# broadcast at once, as etcd does.
COMMIT_DEFER = float(os.environ.get("PETCD_COMMIT_DEFER_MS", "2")) / 1000


class ReadyLoop:
    def __init__(self, driver: RaftDriver) -> None:
        self._d = driver
        # Woken (by wake()) since the loop last looked, and the future the loop parks on:
        # one bare future per wait, not asyncio.Event's waiter list and coroutine.
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        # A Ready taken by propose_inline() that the loop is to finish: (rd, None) not
        # handled yet, or (rd, the WAL save to await) persisted inline up to that save.
        # (None, the segment cut to await) after _finish_overlapped filled a segment.
        self._taken: tuple[Ready | None, Awaitable[object] | None] | None = None
        self._inlining = False  # propose_inline() is under way
        # A Ready was handled inline in this turn of the event loop (cleared by a
        # call_soon, which runs after every I/O callback of the turn): a second proposal
        # in the same turn was read while the first synced, so writes are concurrent.
        self._inlined_turn = False
        # An overlapped inline Ready (_finish_overlapped) answered, whose advance() is
        # left for _new_turn: after the caller's answer is written. Until then the
        # loop is not parked (the Ready is still outstanding).
        self._unadvanced: tuple[Ready, Awaitable[object] | None] | None = None
        self.inline_readies = 0  # Readies handled by _run_inline (tests, benchmarks)
        self._commit_timer: asyncio.TimerHandle | None = None  # flush_commit() due
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s (no getpid() per write)
        raw = driver.raw
        self.term = raw.term
        self.committed = raw.commit_index  # (what the API reports; >= what Raft told us)
        self.durable = driver.mem.last_index()  # last log index known to be in the WAL
        self._pipe = WalPipeline(driver, self, self._hand_out, self._record)

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)

    def wake_if_needed(self) -> None:
        """wake() unless what was stepped left nothing to do (a leader's second ack of a
        write: one loop iteration saved). A Ready outstanding now is followed by the
        loop's own has_ready() check."""
        d = self._d
        if self._taken is not None or d.stopped or d.raw.has_ready():
            self.wake()

    async def run(self) -> None:
        d = self._d
        raw = d.raw
        proposals = d.proposals
        applying = d.apply_queue
        try:
            loop = self._loop = asyncio.get_running_loop()
            while not d.stopped:
                applying.flush()
                timer = self._commit_timer
                if raw.commit_unsent:
                    if timer is None:
                        self._commit_timer = loop.call_later(COMMIT_DEFER,
                                                             self._flush_commit)
                elif timer is not None:  # an append carried it
                    timer.cancel()
                    self._commit_timer = None
                if not self._woken:
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                if proposals.queue and proposals.in_flight:
                    # Under concurrency, one loop iteration for the requests already
                    # read to be proposed with these: bigger batches, hardly any
                    # latency. A lone write (nothing else in flight) goes at once.
                    await asyncio.sleep(0)
                self._woken = False
                taken = self._taken
                if taken is not None:
                    self._taken = None
                    rd, written = taken
                    if written is None:
                        assert rd is not None
                        await self._handle_ready(rd)
                    else:
                        await written
                        if rd is not None:  # (None: a segment cut after an overlapped one)
                            self._finish_lone(rd)
                pipe = self._pipe
                if pipe.full:  # (the proposals read meanwhile go with the next Ready)
                    await pipe.wait()
                self._flush_proposals()
                while raw.has_ready() and not d.stopped:
                    await self._handle_ready(raw.ready())
                    if pipe.full:
                        await pipe.wait()
                    self._flush_proposals()
            await self._pipe.drain(True)  # (stopping: what is in flight is still answered)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            d.fail(e, "the Raft loop failed")
        finally:
            if self._commit_timer is not None:
                self._commit_timer.cancel()
            d.apply_queue.close()  # lets the apply loop finish and end

    def _flush_commit(self) -> None:
        """The commit index no append carried goes to the followers now."""
        self._commit_timer = None
        if not self._d.stopped:
            self._d.raw.flush_commit()
            self.wake()

    def proposed(self) -> None:
        """propose() queued a proposal: handled right here (propose_inline()), else the
        loop is woken; neither when it is woken already (the usual case under
        concurrency: one call per write, not two)."""
        if not self._woken and not self.propose_inline():
            self.wake()

    def propose_inline(self) -> bool:
        """Called by propose() right after queueing a proposal: when it is the only one
        and the loop is parked with nothing to do (so nothing of the loop's runs
        concurrently: it is past advance() of its last Ready and sees our Ready only
        through _taken), hand it to Raft and persist, apply and answer it right here:
        no task wake-up on a lone write's path. Only the plain Ready of a lone voter
        (new entries, no messages, no snapshot, no leader change) and a WAL that syncs
        it inline on the loop thread; the contract's order holds (persist and fdatasync,
        then apply, then advance). Anything else goes to the loop (False: wake it)."""
        if self._inlined_turn or not self._parked():  # (proposed(): not woken)
            return False
        d = self._d
        proposals = d.proposals
        raw = d.raw
        # (last_batch: under concurrency the first request of a burst read in one go
        # would otherwise be synced alone, the rest after it: two fdatasyncs, not one)
        if len(proposals.queue) != 1 or proposals.in_flight or proposals.last_batch != 1 or \
                raw.voters != (d.id,) or not raw.is_leader or not d.wal_writer.can_inline():
            return False
        return self._run_inline(True)

    def receive_inline(self) -> bool:
        """Called by the peer side after stepping what it received, instead of wake(): a
        follower's lone append (one entry to persist, the answer to send) is handled right
        here, as propose_inline() handles a lone voter's write: persisted and fdatasynced
        inline, answered, then applied, then advance(). No task wake-up between the
        append's arrival and its fdatasync. Only while the loop is parked and the WAL
        would sync inline; any other Ready goes to the loop (False: wake it)."""
        d = self._d
        if not self._parked() or self._inlined_turn or d.raw.is_leader or \
                d.proposals.queue or not d.wal_writer.can_inline():
            return False
        return self._run_inline(False)

    def _parked(self) -> bool:
        """The loop waits with nothing to do: a Ready may be handled outside it."""
        # (_inlining: a proposal made while applying ours, e.g. an alarm)
        return self._waiter is not None and not self._woken and self._taken is None and \
            not self._d.stopped and not self._inlining and not self._pipe.in_flight and \
            self._unadvanced is None

    def _run_inline(self, local: bool) -> bool:
        """propose_inline()'s and receive_inline()'s Ready: local, the lone voter's own
        proposal (no messages), else a follower's append (its answers)."""
        d = self._d
        raw = d.raw
        self._inlining = True
        # Without this, 64 clients whose requests wait in their sockets would each be
        # handled alone, one fdatasync apiece with the loop blocked (half the puts/s):
        # the first of a turn goes inline, the rest to the loop, in one batch.
        self._inlined_turn = True
        assert self._loop is not None  # (parked: run() is under way)
        self._loop.call_soon(self._new_turn)
        try:
            # (a proposal handed to Raft is a Ready for sure: no has_ready() then)
            if not (local and self._flush_proposals()) and not raw.has_ready():
                return False
            rd = raw.ready()
            # (one entry: a lone write; bigger appends sync asynchronously on the loop's
            # path, which keeps reading requests and messages meanwhile)
            if rd.soft_state is not None or rd.snapshot is not None or \
                    (local and rd.messages) or rd.read_states or len(rd.entries) != 1:
                self._taken = (rd, None)
                return False
            lone = d.wal_writer.write_lone(rd.hard_state, rd.entries) \
                if self._overlappable(rd) else None
            if lone is not None:
                self._finish_overlapped(rd, lone)
                return not self._woken
            written = d.wal_writer.save(rd.hard_state, rd.entries, None, True)
            if not (isinstance(written, asyncio.Future) and written.done()):
                self._taken = (rd, written)  # (not synced inline after all)
                return False
            written.result()
            if crashpoints.armed:
                crashpoints.reached("inline-synced")
            self._finish_lone(rd)
            self.inline_readies += 1
        except BaseException as e:
            d.fail(e, "the Raft loop failed")
            return False
        finally:
            self._inlining = False
        return not self._woken

    def _new_turn(self) -> None:
        """After the turn of an inline Ready (a call_soon of _run_inline's): the
        answers it resolved were written by now; what they need not wait for is done
        here, before the loop (woken after this) handles anything else."""
        self._inlined_turn = False
        unadvanced = self._unadvanced
        d = self._d
        try:
            if unadvanced is not None:
                self._unadvanced = None
                rd, cut = unadvanced
                self._record(rd)
                self._advance_inline(rd, False)
                if cut is not None:  # the segment is full: the loop waits for the next one
                    self._taken = (None, cut)
                    self.wake()
                elif d.raw.has_ready():
                    self.wake()
            d.wal_writer.settle_lone()
        except BaseException as e:
            d.fail(e, "the Raft loop failed")

    def _overlappable(self, rd: Ready) -> bool:
        """Whether rd's apply may overlap its WAL sync (_finish_overlapped): what it
        commits is exactly what it appends, all KV writes proposed here (whose apply
        changes nothing but the store, and is seen through nothing else)."""
        committed = rd.committed_entries
        if len(committed) != len(rd.entries) or committed[0].index != rd.entries[0].index:
            return False
        by_index = self._d.proposals.by_index
        for e in committed:
            p = by_index.get(e.index)
            if p is None or p.kind not in _OVERLAPPABLE or e.type != _NORMAL:
                return False
        return True

    def _finish_overlapped(self, rd: Ready, lone: LoneSave) -> None:
        """propose_inline()'s Ready whose frame is written and whose write-back started
        (WalWriter.write_lone): its entries are applied while the disk writes, on this
        thread in this same turn, with nothing of them seen until they are durable (no
        watcher told, no caller answered, no backend commit: ApplyQueue.apply_held);
        then the fdatasync, then all that, as _finish_lone does. A failed sync leaves the
        applied state unreadable (the member stops)."""
        d = self._d
        self._hand_out(rd.committed_entries)
        held = d.apply_queue.apply_held()
        if crashpoints.armed and held is not None:
            crashpoints.reached("held-unsynced")
        try:
            cut = lone.finish()
        except BaseException:
            if held is not None:
                held.discard()
            raise
        self.durable = rd.entries[-1].index
        if crashpoints.armed:
            crashpoints.reached("inline-synced")
        if held is not None:
            held.publish()
        else:
            d.apply_queue.flush()
        if crashpoints.armed:  # (applied and answered, the answer not written yet)
            self._crash_if_applied(rd)
        # The in-memory log, advance() and the rest after the answer is written
        # (_new_turn, which runs before the loop task or a task spawned meanwhile can:
        # it was scheduled first; until then Raft reads the entry from its unstable log)
        self._unadvanced = (rd, cut)

    def _finish_lone(self, rd: Ready) -> None:
        """The rest of an inline Ready (_run_inline), once its entries are durable: the
        answers first (a follower's), then the apply."""
        d = self._d
        if rd.messages:
            d.peers.send(rd.messages)
        self.durable = rd.entries[-1].index
        self._record(rd)
        if rd.committed_entries:
            self._hand_out(rd.committed_entries)
            d.apply_queue.flush()
        self._advance_inline(rd)
        if d.raw.has_ready():
            self.wake()

    def _advance_inline(self, rd: Ready, unanswered: bool = True) -> None:
        """An inline Ready persisted and its committed entries applied: advance Raft.
        unanswered: the answers are not written yet (the crash point's window)."""
        d = self._d
        if crashpoints.armed and unanswered:
            self._crash_if_applied(rd)
        d.raw.advance(rd)
        d.leadership.notify(self.term)

    def _crash_if_applied(self, rd: Ready) -> None:
        d = self._d
        if rd.committed_entries and d.applier.applied_index >= rd.committed_entries[-1].index:
            crashpoints.reached("inline-applied", d.backend.commit)

    def _record(self, rd: Ready) -> None:
        """The in-memory Raft storage after rd was persisted: its snapshot, entries and
        hard state (and the term and commit index the API reports)."""
        mem = self._d.mem
        if rd.snapshot is not None:
            mem.apply_snapshot(rd.snapshot)
        if rd.entries:
            mem.append(rd.entries)
        hs = rd.hard_state
        if hs is not None:
            mem.set_hard_state(hs)
            self.term = hs.term
            self.committed = hs.commit

    def _flush_proposals(self) -> bool:
        """Queued proposals to Raft; True if some were handed to it."""
        d = self._d
        proposals = d.proposals
        if not proposals.queue or d.leadership.lead == 0:
            return False
        return proposals.flush(d.raw, d.opts.max_batch_entries)

    async def _handle_ready(self, rd: Ready) -> None:
        d = self._d
        raw = d.raw
        pipe = self._pipe
        if pipe.takes(rd):
            await pipe.wait()
            if pipe.save(rd):
                if d.wal_writer.full:  # the next segment, once this one is durable
                    await pipe.drain()
                    await d.wal_writer.cut()
                return
        if pipe.in_flight:  # (any other Ready: after what is in flight)
            await pipe.drain()
        if rd.soft_state is not None:
            d.leadership.on_soft_state(rd.soft_state)
        messages = rd.messages
        snapshot = rd.snapshot
        committed = rd.committed_entries
        if committed and not rd.must_sync and snapshot is None and not d.proposals.queue:
            # Nothing to make durable (a leader hearing its followers' acks, a follower
            # told the commit index) and no proposal waiting: the committed entries are
            # applied and answered first; the messages (commit updates, heartbeats), the
            # commit-index record and the bookkeeping come after the answered handlers
            # had the loop (3 members, quiet machine: the leader's server time per lone
            # put 874 us against 989 with the commit updates sent first).
            await self._answer_now(committed)
            if crashpoints.armed and rd.hard_state is not None and \
                    d.applier.applied_index >= committed[-1].index:
                crashpoints.reached("commit-unrecorded", d.backend.commit)
            committed = []
        if messages and rd.send_before_persist:
            d.peers.send(messages)
            messages = []
        if rd.must_sync or snapshot is not None:
            handed = 0  # the last index handed out here
            if committed and snapshot is None:
                # Committed entries that earlier Readies already made durable need not
                # wait for this fsync (a leader's are usually all of them): apply them
                # while the WAL writes the new ones.
                durable = self.durable
                if rd.entries:
                    durable = min(durable, rd.entries[0].index - 1)
                if committed[0].index <= durable:
                    n = bisect.bisect_right(committed, durable, key=_index)
                    self._hand_out(committed[:n])
                    handed = committed[n - 1].index
                    committed = committed[n:]
            # A lone write (one entry, no other proposal waiting) may be synced inline.
            proposals = d.proposals
            lone = len(rd.entries) <= 1 and not proposals.queue and proposals.in_flight <= 1
            written = d.wal_writer.save(rd.hard_state, rd.entries, snapshot, lone)
            if messages and snapshot is None and isinstance(written, asyncio.Future) and \
                    written.done():
                # Synced inline (a follower's lone append): its answer goes out before
                # the apply below, which would otherwise delay the leader's commit.
                d.peers.send(messages)
                messages = []
            # (applied while the disk syncs: here at once, unless the WAL thread is to
            # get the GIL first)
            d.apply_queue.flush(inline=not d.wal_writer.uses_thread)
            if crashpoints.armed and handed and d.applier.applied_index >= handed:
                crashpoints.reached("applied-syncing", d.backend.commit)
            await written
            if rd.entries:
                self.durable = rd.entries[-1].index
            elif snapshot is not None:
                self.durable = snapshot.metadata.index
        elif rd.hard_state is not None:
            d.storage.save(rd.hard_state, ())  # commit index only: written, not synced
        if messages and snapshot is None:
            d.peers.send(messages)  # (a follower's answer: right after its fdatasync)
            messages = []
        self._record(rd)
        if messages:
            d.peers.send(messages)
        if snapshot is not None:
            d.apply_queue.flush(inline=False)
            await d.snapshots.install(snapshot.metadata.index, snapshot.metadata.conf_state)
        if committed:
            if d.proposals.queue:
                # Proposals wait: the next Ready goes first and these are applied while
                # its WAL write syncs (the pipeline under concurrency).
                self._hand_out(committed)
            else:
                await self._answer_now(committed)
        if rd.read_states:
            d.reads.on_read_states(rd.read_states)
        raw.advance(rd)
        d.leadership.notify(self.term)

    async def _answer_now(self, committed: list[Entry]) -> None:
        """Hand out, apply and answer at once; when that answered callers of ours, their
        handlers get the loop before the rest of this Ready (advance, the next Ready's
        checks): a lone write's response goes out that much sooner, for one task step."""
        if self._hand_out(committed) and self._d.apply_queue.flush():
            await asyncio.sleep(0)

    def _hand_out(self, entries: list[Entry]) -> bool:
        """Queue committed entries for the apply queue; True if some are proposals made
        here (callers waiting on this member)."""
        batch, local = committed_batch(self._d, entries)
        self.committed = max(self.committed, entries[-1].index)
        self._d.apply_queue.push(batch, local)
        return bool(local)


def _index(e: Entry) -> int:
    return e.index
