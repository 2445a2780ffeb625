"""The playground's member processes and the faults injected into them.

Each member is a real `python -m petcd` process on loopback ports of its own: a client
port, a peer port it listens on, and a proxy port it advertises as its peer URL (see
proxy.py). Faults are real: kill = SIGKILL, restart = the same command on the same data
dir, pause/resume = SIGSTOP/SIGCONT, isolate/heal = the proxies cut its peer links.

The ports are kept in <data dir>/playground.json, so a playground started again on the
same directory finds its members at the addresses their member list records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from petcd.playground.proxy import PeerProxy

log = logging.getLogger("petcd.playground")

TOKEN = "petcd-playground"
HEARTBEAT_MS = 100
ELECTION_MS = 1000
ACTIONS = ("kill", "restart", "pause", "resume", "isolate", "heal")


class ActionError(Exception):
    """A control request that cannot be done now (the text says why)."""


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in (2379, 2380) and port not in taken:
            taken.add(port)
            return port


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int  # the member listens here
    proxy_port: int  # ... and advertises this (its PeerProxy)
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    killed: bool = False
    paused: bool = False
    isolated: bool = False
    exit_code: int | None = None
    started_at: float = 0.0
    member_id: int = 0  # learned from its status (0: not yet known)
    log_path: Path = field(default=Path())

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def state(self) -> str:
        """What the page shows: running / killed / paused / isolated."""
        if self.killed or self.proc is None:
            return "killed"
        if self.paused:
            return "paused"
        if self.isolated:
            return "isolated"
        return "running"


class Cluster:
    def __init__(self, data_dir: Path, members: int) -> None:
        self.data_dir = data_dir
        self.members: dict[str, Member] = {}
        self._proxies: dict[str, PeerProxy] = {}
        self._load_or_plan(members)

    def _load_or_plan(self, count: int) -> None:
        plan = self.data_dir / "playground.json"
        if plan.exists():
            saved = json.loads(plan.read_text())
            entries = saved["members"]
        else:
            taken: set[int] = set()
            entries = [{"name": f"m{i}", "client": free_port(taken), "peer": free_port(taken),
                        "proxy": free_port(taken)} for i in range(1, count + 1)]
            self.data_dir.mkdir(parents=True, exist_ok=True)
            plan.write_text(json.dumps({"members": entries}, indent=1))
        for e in entries:
            m = Member(e["name"], e["client"], e["peer"], e["proxy"],
                       self.data_dir / e["name"])
            m.log_path = self.data_dir / f"{m.name}.log"
            self.members[m.name] = m

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise ActionError(f"no member named {name!r}") from None

    # -- lifecycle
    async def start(self) -> None:
        for m in self.members.values():
            proxy = PeerProxy(m.name, m.proxy_port, m.peer_port, self._blocked)
            await proxy.start()
            self._proxies[m.name] = proxy
        for m in self.members.values():
            self._spawn(m)

    async def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after 10 s) and the proxies."""
        procs = [m.proc for m in self.members.values() if m.proc is not None]
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGCONT)
                    m.proc.terminate()
        deadline = time.monotonic() + 10
        for p in procs:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                p.kill()
                p.wait()
        for proxy in self._proxies.values():
            await proxy.stop()

    def _spawn(self, m: Member) -> None:
        args = [sys.executable, "-m", "petcd", "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-token", TOKEN, "--initial-cluster-state", "new",
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS)]
        # In the playground's process group: whatever stops the group (Ctrl-C in the terminal,
        # a kill of the group) reaches the members too, even if the playground cannot act.
        with open(m.log_path, "ab") as out:
            m.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        m.killed = m.paused = False
        m.exit_code = None
        m.started_at = time.time()

    def poll_exits(self) -> list[Member]:
        """Members whose process ended without being killed here (crashed or refused)."""
        ended = []
        for m in self.members.values():
            if m.proc is not None and not m.killed and m.proc.poll() is not None:
                m.exit_code = m.proc.returncode
                m.killed = True
                ended.append(m)
        return ended

    # -- faults
    def act(self, name: str, action: str) -> str:
        """Do `action` to member `name`; returns what happened, for the timeline."""
        m = self.member(name)
        if action == "kill":
            if m.state == "killed":
                raise ActionError(f"{name} is not running")
            assert m.proc is not None
            m.proc.kill()  # SIGKILL: no clean shutdown, no leadership handed over
            m.proc.wait()
            m.killed, m.paused = True, False
            return f"{name} killed (SIGKILL)"
        if action == "restart":
            if m.state != "killed":
                raise ActionError(f"{name} is running: kill it first")
            self._spawn(m)
            return f"{name} restarted on its data dir"
        if action in ("pause", "resume"):
            if m.state == "killed":
                raise ActionError(f"{name} is not running")
            assert m.proc is not None
            pause = action == "pause"
            m.proc.send_signal(signal.SIGSTOP if pause else signal.SIGCONT)
            m.paused = pause
            return f"{name} {'paused (SIGSTOP)' if pause else 'resumed (SIGCONT)'}"
        if action in ("isolate", "heal"):
            m.isolated = action == "isolate"
            self._enforce()
            return (f"{name} isolated: its peer links cut both ways" if m.isolated
                    else f"{name} healed: peer links restored")
        raise ActionError(f"unknown action {action!r}")

    def heal_all(self) -> str:
        for m in self.members.values():
            m.isolated = False
        self._enforce()
        return "all partitions healed"

    def _blocked(self, sender_id: int, receiver: str) -> bool:
        if self.members[receiver].isolated:
            return True
        return any(m.isolated and m.member_id == sender_id and sender_id
                   for m in self.members.values())

    def _enforce(self) -> None:
        for proxy in self._proxies.values():
            proxy.enforce()

