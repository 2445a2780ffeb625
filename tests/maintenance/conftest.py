"""Helpers for the maintenance tests: petcdctl as a process, gRPC stubs, and waiting for
a member that serves but whose /health is false (an alarm is active)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import SRC_DIR, MemberProcess, have_etcd

needs_etcd = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def petcdctl(*args: str, cwd: str | Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["PYTHONPATH"] = str(SRC_DIR)
    return subprocess.run([sys.executable, "-m", "petcd.cli.ctl", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def error_lines(text: str) -> list[str]:
    """The "Error: ..." lines of etcdctl/petcdctl stderr (etcdctl also logs JSON there)."""
    return [line[line.index("Error: "):] for line in text.splitlines() if "Error: " in line]


class Stubs:
    def __init__(self, member: MemberProcess) -> None:
        self.channel = grpc.insecure_channel(member.address)
        self.kv = rpc_grpc.KVStub(self.channel)
        self.maintenance = rpc_grpc.MaintenanceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def wait_serving(member: MemberProcess, timeout: float = 30.0) -> None:
    """Until Maintenance.Status answers (for restarts where /health is false)."""
    deadline = time.monotonic() + timeout
    while True:
        assert member.proc is not None
        if member.proc.poll() is not None:
            raise RuntimeError(f"{member.kind} exited; log:\n{member.log_tail()}")
        try:
            with grpc.insecure_channel(member.address) as ch:
                rpc_grpc.MaintenanceStub(ch).Status(rpc.StatusRequest(), timeout=1)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def restart(member: MemberProcess) -> None:
    member.stop()
    member.start(wait=False)
    wait_serving(member)
