"""Committed log entries turned into the apply queue's batch: a conf change is applied to
Raft, the member list and the transport right here (in log order, before anything after
it is handed out); an entry this member proposed in the same term is its own Pending
(the caller waiting on it is answered after the apply); one whose index was overwritten
by another leader's entry has its caller told the leader changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from petcd import errors
from petcd.raft import Entry, EntryType, decode_conf_change
from petcd.server.membership import CONF_CHANGE_KIND
from petcd.server.proposal import Committed
from petcd.server.raftnode.proposals import Pending

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

_CONF_CHANGE = EntryType.CONF_CHANGE


def committed_batch(d: RaftDriver, entries: list[Entry]
                    ) -> tuple[list[Committed], list[tuple[int, Pending]]]:
    """The batch for ApplyQueue.push, and this member's own proposals in it by position."""
    batch: list[Committed] = []
    local: list[tuple[int, Pending]] = []
    by_index = d.proposals.by_index
    for e in entries:
        if e.type == _CONF_CHANGE:
            cc = decode_conf_change(e.data)
            cs = d.raw.apply_conf_change(cc)
            d.snapshots.conf_changed(e.index, cs)
            d.membership.apply(e.index, cc)
            d.members.after_conf_change(cc)
            batch.append(Committed(e.index, e.term, CONF_CHANGE_KIND, cc))
            continue
        p = by_index.get(e.index) if by_index else None
        if p is not None:
            del by_index[e.index]
            if p.term == e.term:  # (p is this entry: index and term set by flush())
                local.append((len(batch), p))
                batch.append(p)
                continue
            if not p.future.done():  # our entry at this index was overwritten
                p.future.set_result(errors.LEADER_CHANGED())
        batch.append(Committed(e.index, e.term, None, None, e.data))
    return batch, local
