"""Seeded Raft cluster simulations (see raft_sim.py for what is checked).

A failing seed prints its replay command; run one alone with
    pytest "tests/sim/test_raft_sim.py::test_seed[seed_123]"
    python tests/sim/raft_sim.py --seed 123 -v
PETCD_SIM_SEEDS=N changes how many seeds the default run covers (default 500).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
from raft_sim import SimConfig, SimFailure, Simulation

from petcd.raft import RaftError
from petcd.raft.log import RaftLog
from petcd.raft.raft import Raft

SEEDS = int(os.environ.get("PETCD_SIM_SEEDS", "500"))


@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda s: f"seed_{s}")
def test_seed(seed: int) -> None:
    Simulation(seed).run()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100_000, 101_000), ids=lambda s: f"seed_{s}")
def test_seed_long(seed: int) -> None:
    cfg = SimConfig.for_seed(seed)
    cfg.fault_ticks = 5000
    Simulation(seed, cfg).run()


def _finds_bug(seeds: Iterable[int], fault_ticks: int = 300) -> str | None:
    """Run seeds until one fails; the failure text, or None."""
    for seed in seeds:
        cfg = SimConfig.for_seed(seed)
        cfg.fault_ticks = fault_ticks
        try:
            Simulation(seed, cfg).run()
        except (SimFailure, RaftError) as e:
            return str(e)
    return None


def test_simulator_catches_votes_for_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    found = _finds_bug(range(40))
    assert found is not None and ("Completeness" in found or "Safety" in found), found


def test_simulator_catches_double_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Raft._handle_vote_request

    def forgetful(self: Raft, m: object) -> None:
        self.vote = 0  # forgets the vote it already cast this term
        self.lead = 0
        real(self, m)  # type: ignore[arg-type]

    monkeypatch.setattr(Raft, "_handle_vote_request", forgetful)
    found = _finds_bug(range(40))
    assert found is not None and "Election Safety" in found, found


def test_simulator_catches_reads_without_quorum_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def unchecked(self: Raft, m: object) -> None:
        self._answer_read(m, self.log.committed)  # type: ignore[arg-type]

    monkeypatch.setattr(Raft, "_leader_read_index", unchecked)
    found = _finds_bug(range(60))
    assert found is not None and "read safety" in found, found


def test_simulator_catches_commits_of_old_terms_by_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raft paper figure 8: committing an entry of an earlier term by counting
    replicas. Rare; these default-suite seeds reach that situation (about 6 in
    1000 do). If the simulator changes, find new ones with this mutation."""

    def counts_any_term(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", counts_any_term)
    found = _finds_bug([148, 275, 386], fault_ticks=SimConfig.fault_ticks)
    assert found is not None and "Leader Completeness" in found, found
