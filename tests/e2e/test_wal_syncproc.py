"""A member whose WAL fdatasyncs run in a process of their own (PETCD_WAL_AIO=proc,
petcd.wal.syncproc): it answers writes through it; when that process is killed it goes
on answering, syncing in the member (nothing unconfirmed counts); the process ends with
the member (SIGTERM and kill -9). Real members, real signals. With
PETCD_WAL_INLINE_FAST_MS=0 no save is synced inline on the loop, so every put's
fdatasync goes through the process."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import PetcdProcess

PROC_ENV = {"PETCD_WAL_AIO": "proc", "PETCD_WAL_INLINE_FAST_MS": "0"}


def sync_processes(data_dir: Path) -> list[int]:
    """The fdatasync processes holding a file under data_dir (a member's, or orphans)."""
    found = []
    root = os.path.realpath(data_dir)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"syncchild.py" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                continue
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # (exited meanwhile)
        if any(link.startswith(root + os.sep) for link in links):
            found.append(int(pid))
    return found


def wait_for(cond: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def the_sync_process(member: PetcdProcess) -> int:
    """The member's fdatasync process (it holds the WAL once a save went through it)."""
    puts(member, "first", 1)
    found: list[int] = []
    assert wait_for(lambda: bool(found.extend(sync_processes(member.data_dir)) or found)), \
        "no fdatasync process holds the member's WAL"
    [pid] = found
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == \
        str(member.proc.pid if member.proc else -1)  # (its parent: the member)
    return pid


def puts(member: PetcdProcess, prefix: str, n: int) -> None:
    with member.grpc_channel() as ch, ThreadPoolExecutor(8) as pool:
        kv = rpc_grpc.KVStub(ch)
        list(pool.map(lambda i: kv.Put(rpc.PutRequest(key=f"{prefix}/{i}".encode(),
                                                      value=b"v"), timeout=30), range(n)))


def count(member: PetcdProcess, prefix: str) -> int:
    with member.grpc_channel() as ch:
        resp = rpc_grpc.KVStub(ch).Range(rpc.RangeRequest(
            key=f"{prefix}/".encode(), range_end=f"{prefix}0".encode(), count_only=True),
            timeout=30)
        return int(resp.count)


def test_writes_go_on_when_the_sync_process_dies(petcd_factory: Any) -> None:
    member = petcd_factory(env=PROC_ENV)
    child = the_sync_process(member)
    puts(member, "a", 200)
    os.kill(child, signal.SIGKILL)
    puts(member, "b", 200)
    assert wait_for(lambda: "fdatasync process" in member.log_tail(20000) and
                    "is gone" in member.log_tail(20000))
    assert member.stop() == 0
    member.start()
    assert count(member, "a") == count(member, "b") == 200


def test_the_sync_process_ends_with_the_member(petcd_factory: Any) -> None:
    member = petcd_factory(env=PROC_ENV)
    the_sync_process(member)
    assert member.stop() == 0  # SIGTERM: the member closes it
    assert sync_processes(member.data_dir) == []
    member.start()
    the_sync_process(member)
    member.kill()  # kill -9: the kernel closes the member's end of the socket
    assert wait_for(lambda: sync_processes(member.data_dir) == [])
