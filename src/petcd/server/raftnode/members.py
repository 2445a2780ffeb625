"""Membership operations: conf changes proposed through the log, the Cluster RPCs (run by
the leader; other members forward them over the peer transport), publishing this member's
name and client URLs, and keeping the transport's peers equal to the member list."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import operator
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from grpc import StatusCode

from petcd import errors
from petcd.errors import EtcdError, LeaderUnreachable
from petcd.raft import ConfChange, DropReason, ProposalDropped, Role
from petcd.server.ids import member_id as derive_member_id
from petcd.server.membership import (
    Member,
    add_change,
    attributes_change,
    learner_check_promote,
    members_to_json,
    promote_change,
    quorum_check_add,
    quorum_check_remove,
    remove_change,
    update_change,
)
from petcd.server.raftnode.reads import resolve
from petcd.transport import RequestFailed

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0  # a peer counts as healthy once connected this long (etcd's)


class MemberOps:
    def __init__(self, driver: RaftDriver) -> None:
        self._d = driver
        self._conf_waiters: dict[int, asyncio.Future[None]] = {}  # proposal id -> applied
        self._publish_at = 0.0
        self._publishing = False

    # -- the member list and the transport

    def sync_transport(self) -> None:
        """Make the transport's peers match the member list."""
        d = self._d
        t = d.transport
        for m in d.membership.members.values():
            if m.id == d.id or not m.peer_urls:
                continue
            if m.id in t.peer_ids():
                t.update_peer(m.id, m.peer_urls)
            else:
                t.add_peer(m.id, m.peer_urls)
        for rid in d.membership.removed:
            if rid != d.id:
                t.remove_peer(rid)

    def after_conf_change(self, cc: ConfChange) -> None:
        d = self._d
        self.sync_transport()
        if d.id in d.membership.removed:
            d.removed()

    def conf_changes_applied(self, ids: list[int]) -> None:
        waiters = self._conf_waiters
        for rid in ids:
            fut = waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    @property
    def waiting(self) -> bool:
        return bool(self._conf_waiters)

    def fail(self, err: EtcdError) -> None:
        resolve(list(self._conf_waiters.values()), err)

    # -- publishing (etcd's 'publish')

    def published(self) -> bool:
        d = self._d
        me = d.membership.local
        opts = d.opts
        return me is not None and me.name == opts.name and \
            me.client_urls == list(opts.advertise_client_urls)

    def on_tick(self, now: float, lead: int) -> None:
        if lead and not self._publishing and now >= self._publish_at:
            self.maybe_publish(now)

    def maybe_publish(self, now: float) -> None:
        """Publish our name and client URLs until the list has them."""
        if self._publishing:
            return
        d = self._d
        me = d.membership.local
        opts = d.opts
        urls = list(opts.advertise_client_urls)
        if me is None or self.published():
            if me is not None and not d.ready.is_set():
                d.ready.set()
            return
        self._publishing = True
        # A leader drops conf changes forwarded while one of its own is unapplied (its
        # first entry counts): retry soon rather than wait out a request timeout.
        wait = max(0.5, 5 * d.tick_s)
        self._publish_at = now + wait

        async def publish() -> None:
            try:
                err = await self.conf_change(attributes_change(d.id, opts.name, urls),
                                             timeout=wait)
                if err is None:
                    log.info("published name %s and client URLs %s", opts.name, urls)
            finally:
                self._publishing = False

        d.spawn(publish())

    # -- conf changes and the Cluster RPCs

    async def conf_change(self, cc: ConfChange, *, timeout: float | None = None
                          ) -> EtcdError | None:
        """Propose a membership change and wait until it is applied here."""
        d = self._d
        if d.stopped:
            return errors.STOPPED()
        started = time.time()
        deadline = time.monotonic() + (timeout or d.request_timeout)
        rid = d.proposals.new_id()
        cc = dataclasses.replace(cc, id=rid)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[rid] = fut
        try:
            while True:
                try:
                    d.raw.propose_conf_change(cc)
                    break
                except ProposalDropped as e:
                    if e.reason not in (DropReason.CONF_CHANGE_PENDING, DropReason.NO_LEADER,
                                        DropReason.TRANSFER_PENDING):
                        return EtcdError(StatusCode.UNAVAILABLE, f"etcdserver: {e.reason.value}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return d.leadership.timeout_error(started)
                    # Asked again after a tick, or as soon as the leader changes (a new
                    # one known, a transfer ended).
                    watch = d.leadership.watch
                    await watch.wait_for(partial(operator.ne, watch.lead),
                                         asyncio.get_running_loop().time() + min(left, d.tick_s))
                    if d.stopped:
                        return errors.STOPPED()
            d.wake()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await fut
            except TimeoutError:
                return d.leadership.timeout_error(started)
            except EtcdError as e:
                return e
            return None
        finally:
            self._conf_waiters.pop(rid, None)

    async def member_op(self, op: str, **args: Any) -> tuple[Member | None, list[Member]]:
        """A Cluster RPC: run by the leader (forwarded to it from other members).
        Raises EtcdError."""
        d = self._d
        if d.stopped:
            raise errors.STOPPED()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + d.request_timeout

        async def there(lead: int) -> tuple[Member | None, list[Member]]:
            try:
                answer = await d.transport.request(
                    lead, json.dumps({"op": op, **args}).encode(),
                    timeout=max(0.1, deadline - loop.time()))
            except RequestFailed as e:
                raise LeaderUnreachable(str(e)) from e
            doc = json.loads(answer)
            if "error" in doc:
                if doc.get("not_leader"):
                    raise LeaderUnreachable("leadership moved meanwhile")
                code, message = doc["error"]
                raise EtcdError(StatusCode[code], message)
            member = Member.from_json(doc["member"]) if doc.get("member") else None
            return member, [Member.from_json(m) for m in doc["members"]]

        return await d.leadership.watch.call_leader(
            lambda: self._member_op_here(op, args), there, deadline, pause=d.tick_s)

    async def _member_op_here(self, op: str, args: dict[str, Any]
                              ) -> tuple[Member | None, list[Member]]:
        d = self._d
        ms = d.membership
        member: Member | None = None
        if op == "add":
            urls = sorted(args["peerURLs"])
            member = Member(derive_member_id(urls, "", now=int(time.time())), "", urls, [],
                            bool(args["isLearner"]))
            err = ms.check_add(member, d.opts.max_learners) or self._check_add(member)
            cc = add_change(member)
        elif op == "remove":
            mid = int(args["id"])
            err = ms.check_remove(mid) or self._check_remove(mid)
            cc = remove_change(mid)
        elif op == "update":
            mid = int(args["id"])
            err = ms.check_update(mid, list(args["peerURLs"]))
            cc = update_change(mid, list(args["peerURLs"]))
        elif op == "promote":
            mid = int(args["id"])
            err = ms.check_promote(mid) or self._check_promote(mid)
            cc = promote_change(mid)
        else:
            raise EtcdError(StatusCode.INVALID_ARGUMENT, f"unknown member operation {op}")
        if err is not None:
            raise err
        err = await self.conf_change(cc)
        if err is not None:
            raise err
        return member, ms.sorted()

    def _connected_long_enough(self, member_id: int) -> bool:
        d = self._d
        return member_id == d.id or \
            d.leadership.connected_since(member_id, time.time() - HEALTH_INTERVAL)

    def _check_add(self, member: Member) -> EtcdError | None:
        d = self._d
        if not d.opts.strict_reconfig_check:
            return None
        return quorum_check_add(d.membership, member, self._connected_long_enough)

    def _check_remove(self, mid: int) -> EtcdError | None:
        d = self._d
        if not d.opts.strict_reconfig_check:
            return None
        return quorum_check_remove(d.membership, mid, self._connected_long_enough,
                                   down=mid != d.id and
                                   d.transport.active_since(mid) is None)

    def _check_promote(self, mid: int) -> EtcdError | None:
        d = self._d
        raw = d.raw
        ours = raw.match_index(d.id)
        if ours is None:
            return errors.NOT_LEADER()  # only the leader knows how far the learner is
        return learner_check_promote(d.membership, raw.match_index(mid) or 0, ours,
                                     d.opts.strict_reconfig_check)

    async def on_request(self, from_id: int, payload: bytes) -> bytes:
        """Peer REQUEST connections: the member list for a joining member, and Cluster
        RPCs forwarded to the leader."""
        d = self._d
        doc = json.loads(payload)
        op = doc.pop("op")
        if op == "members":
            return members_to_json(d.cluster_id, d.membership.sorted())
        try:
            if d.leadership.role != Role.LEADER:
                raise errors.NOT_LEADER()
            member, members = await self._member_op_here(op, doc)
        except EtcdError as e:
            doc = {"error": [e.code.name, e.message]}
            if e.kind is errors.NOT_LEADER:
                doc["not_leader"] = True  # (the asker retries with the new leader)
            return json.dumps(doc).encode()
        return json.dumps({"member": member.to_json() if member else None,
                           "members": [m.to_json() for m in members]}).encode()
