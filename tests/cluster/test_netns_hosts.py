"""Members on separate hosts: each of three members in its own network namespace with its
own address (veth pairs on a bridge, made here as root and torn down after; addresses in
10.254.7.0/24 exist only inside this test), delay and loss between them with `tc netem`
where the kernel has it, and a link-level partition of the leader. The cluster elects,
serves linearizable reads and writes, rides out the partition and heals. Slow: `make soak`.

Election timing across real links: keep --heartbeat-interval near the round-trip time and
--election-timeout ten times that (here 25 ms each way: 100 ms / 1000 ms)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing import Etcdctl, PetcdProcess, free_port

pytestmark = pytest.mark.slow

NET = "10.254.7"
BRIDGE = "ptbr7"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


class NetnsMember(PetcdProcess):
    """A petcd member running inside network namespace `ns` at address `host`."""

    def __init__(self, data_dir: Path, ns: str, host: str, **kw: object) -> None:
        self.ns, self.host = ns, host
        super().__init__(data_dir, **kw)  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *super().command()]

    def _is_ours(self) -> bool:
        return True  # its own address: nobody else's process can answer there


@pytest.fixture
def hosts() -> Iterator[tuple[list[tuple[str, str, str]], bool]]:
    if os.geteuid() != 0 or sh("ip", "netns", "list", check=False).returncode != 0:
        pytest.skip("needs root and iproute2 network namespaces")
    made: list[tuple[str, str, str]] = []
    netem = True
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.254/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for i in (1, 2, 3):
            ns, outer, inner = f"ptns7-{i}", f"ptv7h{i}", f"ptv7n{i}"
            sh("ip", "netns", "add", ns)
            made.append((ns, outer, f"{NET}.{i}"))
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "master", BRIDGE)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NET}.{i}/24", "dev", inner)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            if netem and sh("tc", "qdisc", "add", "dev", outer, "root", "netem", "delay",
                            "25ms", "loss", "1%", check=False).returncode != 0:
                netem = False  # this kernel has no sch_netem: partitions only
        yield made, netem
    finally:
        for ns, outer, _ in made:
            sh("ip", "link", "del", outer, check=False)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)


def wait_leader(ctl: Etcdctl, among: list[NetnsMember], timeout: float = 30) -> NetnsMember:
    deadline = time.monotonic() + timeout
    while True:
        for m in among:
            try:
                r = Etcdctl(m.endpoint, timeout=5)("endpoint", "status", "-w", "json")
            except subprocess.TimeoutExpired:
                continue  # (a slow answer is no answer: ask again until the deadline)
            if r.returncode == 0:
                st = json.loads(r.stdout)[0]["Status"]
                if st["leader"] == st["header"]["member_id"]:
                    return m
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.3)


def test_three_hosts_partition_and_heal(hosts: tuple[list[tuple[str, str, str]], bool],
                                        tmp_path: Path) -> None:
    made, netem = hosts
    ports = [(free_port(), free_port()) for _ in made]
    members = [NetnsMember(tmp_path / f"m{i}", ns, addr, name=f"m{i}", client_port=c,
                           peer_port=p, args=["--heartbeat-interval", "100",
                                              "--election-timeout", "1000"])
               for i, ((ns, _, addr), (c, p)) in enumerate(zip(made, ports, strict=True))]
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = cluster
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready(60)
        ctl = Etcdctl([m.endpoint for m in members], timeout=30)
        leader = wait_leader(ctl, members)
        for i in range(20):
            ctl.ok("put", f"hosts/{i}", str(i))
        for m in members:  # linearizable reads on every host
            assert Etcdctl(m.endpoint).ok("get", "hosts/19", "--print-value-only") == "19\n"

        # Cut the leader's link: the other two elect, and serve.
        outer = next(o for ns, o, _ in made if ns == leader.ns)
        sh("ip", "link", "set", outer, "down")
        rest = [m for m in members if m is not leader]
        new_leader = wait_leader(ctl, rest, timeout=30)
        assert new_leader is not leader
        Etcdctl([m.endpoint for m in rest]).ok("put", "hosts/partitioned", "majority")
        # The cut-off leader cannot take a write (its link is down: unreachable).
        assert Etcdctl(leader.endpoint, timeout=10)(
            "--command-timeout=3s", "put", "hosts/lost", "x").returncode != 0

        # Heal: the old leader follows and has the majority's write.
        sh("ip", "link", "set", outer, "up")
        deadline = time.monotonic() + 30
        while Etcdctl(leader.endpoint, timeout=10)(
                "get", "hosts/partitioned", "--print-value-only").stdout != "majority\n":
            assert time.monotonic() < deadline, leader.log_tail()
            time.sleep(0.5)
        ctl.ok("put", "hosts/healed", "yes")
        for m in members:
            assert Etcdctl(m.endpoint).ok("get", "hosts/healed", "--print-value-only") == \
                "yes\n"
        print(f"netem delay/loss {'on' if netem else 'unavailable in this kernel'}")
    finally:
        for m in members:
            m.kill()
