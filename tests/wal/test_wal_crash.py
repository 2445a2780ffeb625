"""Crash tests: a writer process is killed with SIGKILL at random moments;
after every kill, recovery must find every acknowledged step, in order, and
open cleanly. Kill timing is random; what is checked is exact: the recovered
log equals the model after the last acknowledged step, or after the one step
that was in flight."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wal_crash_writer import MAX_FILES, METADATA, SEGMENT_SIZE, Model

from petcd.wal import frame as fr
from petcd.wal.segments import list_segments, scan_segment
from petcd.wal.storage import MemberStorage, snap_dir, wal_dir

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parents[1] / "src")
WRITER = str(HERE / "wal_crash_writer.py")


def check_recovery(data_dir: str, model: Model, acked: int, torn_write: bool = False) -> None:
    """Restart like a member does and compare with the model; advances it."""
    if not MemberStorage.exists(data_dir):
        assert acked == 0, "acknowledged steps but no WAL"
        return
    storage, rec = MemberStorage.restore(data_dir, segment_size=SEGMENT_SIZE)
    try:
        step = rec.hard_state.vote
        assert acked <= step <= acked + 1, f"recovered step {step}, acknowledged {acked}"
        if torn_write:
            assert step == acked, f"torn step {step} survived"
        assert step >= model.step
        model.advance_to(step)
        assert rec.metadata == METADATA
        assert rec.hard_state == model.hard_state()
        assert rec.snapshot == model.snapshot()
        want = model.entries(model.snap_index + 1, len(model.log))
        assert len(rec.entries) == len(want)
        assert rec.entries == want
        storage.purge(MAX_FILES, MAX_FILES)  # a kill may have come before the writer's
    finally:
        storage.close()
    snaps = [n for n in os.listdir(snap_dir(data_dir)) if n.endswith(".snap")]
    assert len(snaps) <= MAX_FILES
    segments = list_segments(wal_dir(data_dir))
    # more segments only if all of them hold entries after the snapshot
    assert len(segments) <= MAX_FILES or all(s.first_index > model.snap_index for s in segments[1:])


def tear_unacknowledged_write(data_dir: str, acked: int, rng: random.Random) -> bool:
    """Simulate a power loss on top of the kill: the write of the step in flight
    (complete in the page cache, which SIGKILL keeps) reaches the disk only in
    part, as if power failed before its fdatasync returned. Returns whether
    there was such a write to tear."""
    tail = list_segments(wal_dir(data_dir))[-1].path
    frames, _, damage = scan_segment(tail)
    last = frames[-1]
    if damage is not None or last.type != fr.BATCH:
        return False
    batch = fr.decode_batch(last.payload, 1 << 64)
    if batch.state is None or batch.state.vote != acked + 1:
        return False
    if batch.snapshot is not None:
        # After a marker is synced the writer purges older files: a marker that
        # got as far as the purge can no longer be lost, so don't tear it.
        return False
    with open(tail, "r+b") as f:
        f.seek(last.offset)
        original = f.read(last.size)
        torn = bytearray(original)
        if rng.random() < 0.5:  # some sectors of the frame never made it
            first, end = last.offset // fr.SECTOR, (last.offset + last.size - 1) // fr.SECTOR
            for sector in rng.sample(range(first, end + 1), rng.randint(1, end - first + 1)):
                lo = max(sector * fr.SECTOR, last.offset) - last.offset
                hi = min((sector + 1) * fr.SECTOR, last.offset + last.size) - last.offset
                torn[lo:hi] = bytes(hi - lo)
        if torn != original:
            f.seek(last.offset)
            f.write(torn)
        else:  # the write stopped short (or the lost sectors held only zeros anyway);
            # cut inside header + payload: a cut in the zero padding loses nothing
            f.truncate(rng.randrange(last.offset, last.offset + fr.HEADER_SIZE + len(last.payload)))
    return True


def run_trials(data_dir: str, seed: int, trials: int) -> None:
    rng = random.Random(seed)
    model = Model(seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(HERE)])}
    torn = torn_checked = 0
    for trial in range(trials):
        preallocate = "1" if trial % 2 else "0"
        proc = subprocess.Popen(
            [sys.executable, WRITER, data_dir, str(seed), preallocate],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            if rng.random() < 0.1:
                time.sleep(rng.uniform(0, 0.08))  # may die while creating or recovering
            else:
                ready = proc.stdout.readline().decode()
                assert ready == f"ready {model.step}\n", proc.stderr.read().decode()
                time.sleep(rng.uniform(0, 0.12))
        finally:
            proc.kill()
        # read through the same buffered objects readline() used: not communicate()
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=60)
        assert proc.returncode == -9, f"writer died by itself (trial {trial}): {err.decode()}"
        lines = out.decode().split("\n")
        assert lines[-1] == ""
        acks = [int(line.split()[1]) for line in lines[:-1] if line.startswith("ack ")]
        assert acks == list(range(model.step + 1, model.step + 1 + len(acks))), (
            f"acks {acks[:3]}... after step {model.step}; output {lines[:3]}"
        )
        acked = acks[-1] if acks else model.step
        if MemberStorage.exists(data_dir) and rng.random() < 0.5:
            torn += tear_unacknowledged_write(data_dir, acked, rng)
        try:
            check_recovery(data_dir, model, acked, torn_write=torn > torn_checked)
            torn_checked = torn
        except BaseException as exc:
            exc.add_note(f"seed {seed}, trial {trial}, data dir {data_dir}")
            raise
    assert model.step > trials  # the writers made progress
    assert model.snap_index > 0
    assert torn > 0  # power losses were simulated and survived (about 1 trial in 3)


def test_crash_recovery_50_kills(tmp_path: Path) -> None:
    run_trials(str(tmp_path / "data"), seed=1, trials=50)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_crash_recovery_soak(tmp_path: Path, seed: int) -> None:
    run_trials(str(tmp_path / "data"), seed=seed, trials=250)
