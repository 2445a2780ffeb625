"""Dump a member's WAL and snapshot files: `python -m petcd.wal.inspect DIR`.

DIR is a data dir, its member/ dir, or a WAL dir. Read-only: takes no lock
and repairs nothing, so it is safe next to a running member."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import TextIO

from petcd.wal import frame as fr
from petcd.wal.errors import CorruptSnapshotError
from petcd.wal.segments import list_segments, scan_segment
from petcd.wal.snap import Snapshotter, read_snap


def _find_dirs(path: str) -> tuple[str | None, str | None]:
    for base in (path, os.path.join(path, "member")):
        wal, snap = os.path.join(base, "wal"), os.path.join(base, "snap")
        if os.path.isdir(wal) or os.path.isdir(snap):
            return (wal if os.path.isdir(wal) else None), (snap if os.path.isdir(snap) else None)
    return path, None


def dump_wal(dirpath: str, out: TextIO, show_entries: bool = False) -> int:
    """Print every segment's frames; returns the number of problems found."""
    problems = 0
    segments = list_segments(dirpath)
    print(f"wal {dirpath}: {len(segments)} segment(s)", file=out)
    for before, after in itertools.pairwise(segments):
        if after.seq != before.seq + 1:
            print(f"  MISSING segment(s) between {before.path} and {after.path}", file=out)
            problems += 1
    for seg in segments:
        frames, end, damage = scan_segment(seg.path)
        size = os.path.getsize(seg.path)
        print(f"{os.path.basename(seg.path)}  ({size} bytes)", file=out)
        for f in frames:
            print(f"  @{f.offset:<10} {_describe(f.type, f.payload, show_entries)}", file=out)
        if damage is None:
            print(f"  end of records at offset {end}", file=out)
        else:
            print(f"  DAMAGE at offset {end}: {damage} (torn tail if this is the end)", file=out)
            problems += 1
    return problems


def _describe(ftype: int, payload: bytes, show_entries: bool) -> str:
    if ftype == fr.SEGMENT:
        head = fr.decode_segment_head(payload)
        s = head.state
        return (
            f"SEGMENT seq={head.seq} first_index={head.first_index} "
            f"state=(term={s.term} vote={s.vote} commit={s.commit}) "
            f"metadata={head.metadata.hex() or '-'}"
        )
    batch = fr.decode_batch(payload)
    parts = ["BATCH"]
    if batch.state is not None:
        s = batch.state
        parts.append(f"state=(term={s.term} vote={s.vote} commit={s.commit})")
    if batch.snapshot is not None:
        m = batch.snapshot
        parts.append(
            f"snapshot=(index={m.index} term={m.term} voters={list(m.conf_state.voters)} "
            f"learners={list(m.conf_state.learners)})"
        )
    if batch.count:
        ents = batch.entries
        nbytes = sum(len(e.data) for e in ents)
        terms = sorted({e.term for e in ents})
        parts.append(
            f"entries={ents[0].index}..{ents[-1].index} terms={terms[0]}..{terms[-1]} "
            f"data={nbytes}B"
        )
        if show_entries:
            lines = [
                f"\n      index={e.index} term={e.term} type={e.type.name} len={len(e.data)}"
                for e in ents
            ]
            parts.append("".join(lines))
    return " ".join(parts)


def dump_snap(dirpath: str, out: TextIO) -> int:
    problems = 0
    names = Snapshotter(dirpath).snap_names()
    print(f"snap {dirpath}: {len(names)} snapshot file(s)", file=out)
    for name in sorted(os.listdir(dirpath)):
        path = os.path.join(dirpath, name)
        if name in names:
            try:
                snap = read_snap(path)
            except CorruptSnapshotError as err:
                print(f"  {name}  BROKEN: {err.reason}", file=out)
                problems += 1
                continue
            md = snap.metadata
            print(
                f"  {name}  index={md.index} term={md.term} "
                f"voters={list(md.conf_state.voters)} learners={list(md.conf_state.learners)} "
                f"data={len(snap.data)}B",
                file=out,
            )
        else:
            print(f"  {name}  ({os.path.getsize(path)} bytes)", file=out)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petcd.wal.inspect", description=__doc__)
    parser.add_argument("dir", help="data dir, member dir or WAL dir")
    parser.add_argument("--entries", action="store_true", help="list every entry")
    args = parser.parse_args(argv)
    wal, snap = _find_dirs(args.dir)
    problems = 0
    if wal is not None:
        problems += dump_wal(wal, sys.stdout, args.entries)
    if snap is not None:
        problems += dump_snap(snap, sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
