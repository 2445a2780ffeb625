"""Patroni (Debian's package, unchanged) keeping a 2-node PostgreSQL cluster highly
available with a 3-member petcd cluster as its DCS, through the v3 JSON gateway: a
leader is elected, a row written on it reaches the replica, the replica takes over
when the leader's Patroni stops, and the cluster keeps its leader and keeps writing
when the petcd leader is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from petcd.testing import PetcdCluster, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("patroni") is None or not PG_BIN.is_dir()
                       or shutil.which("runuser") is None or os.geteuid() != 0,
                       reason="needs Debian's patroni and postgresql, run as root "
                              "(PostgreSQL itself runs as user postgres)"),
]


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (requests.RequestException, subprocess.SubprocessError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class PatroniNode:
    def __init__(self, base: Path, name: str, etcd_hosts: str) -> None:
        self.name = name
        self.rest_port = free_port()
        self.pg_port = free_port()
        self.config = base / f"{name}.yml"
        self.log = base / f"{name}.log"
        self.config.write_text(f"""
scope: petcd-test
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{self.rest_port}
  connect_address: 127.0.0.1:{self.rest_port}
etcd3:
  hosts: {etcd_hosts}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 6
    maximum_lag_on_failover: 10485760
    postgresql:
      use_pg_rewind: false
      parameters: {{wal_level: replica, hot_standby: "on", max_wal_senders: 5,
                   max_replication_slots: 5}}
  initdb: [{{encoding: UTF8}}]
  pg_hba:
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
  - local all all trust
postgresql:
  listen: 127.0.0.1:{self.pg_port}
  connect_address: 127.0.0.1:{self.pg_port}
  data_dir: {base}/{name}-data
  bin_dir: {PG_BIN}
  pgpass: {base}/{name}.pgpass
  authentication:
    replication: {{username: replicator, password: rep}}
    superuser: {{username: postgres, password: pw}}
  parameters: {{unix_socket_directories: '{base}'}}
""")
        shutil.chown(self.config, "postgres")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", "patroni",
                                      str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        """SIGTERM: Patroni stops PostgreSQL and gives up the leader key."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def role(self, role: str) -> bool:
        return requests.get(f"http://127.0.0.1:{self.rest_port}/{role}", timeout=3).status_code \
            == 200

    def sql(self, statement: str) -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d",
             "postgres", "-AtX", "-c", statement], check=True, capture_output=True, timeout=20,
            env={**os.environ, "PGPASSWORD": "pw", "PGCONNECT_TIMEOUT": "5"}).stdout.decode()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[PetcdCluster, list[PatroniNode]]]:
    base = Path(tempfile.mkdtemp(prefix="petcd-patroni-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.chown(base, "postgres")
    nodes: list[PatroniNode] = []
    with PetcdCluster(tmp_path / "petcd", 3) as cluster:
        hosts = ",".join(e.removeprefix("http://") for e in cluster.endpoints)
        nodes = [PatroniNode(base, f"pg{i}", hosts) for i in range(2)]
        try:
            yield cluster, nodes
        finally:
            for n in nodes:
                n.stop()
            for n in nodes:
                if n.log.exists():
                    print(f"==== {n.name} ====\n{n.log.read_text()[-4000:]}")
            shutil.rmtree(base, ignore_errors=True)


def leader_of(nodes: list[PatroniNode]) -> PatroniNode | None:
    leaders = []
    for n in nodes:
        try:
            if n.role("leader"):
                leaders.append(n)
        except requests.RequestException:
            pass
    assert len(leaders) <= 1, "two PostgreSQL leaders"
    return leaders[0] if leaders else None


def test_patroni_over_the_gateway(setup: tuple[PetcdCluster, list[PatroniNode]]) -> None:
    cluster, nodes = setup
    nodes[0].start()
    wait_for(lambda: leader_of(nodes) is nodes[0], 180, "pg0 to bootstrap and lead")
    nodes[1].start()
    wait_for(lambda: nodes[1].role("replica"), 180, "pg1 to run as a replica")
    nodes[0].sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('one')")
    wait_for(lambda: nodes[1].sql("SELECT v FROM t").strip() == "one", 60,
             "the row on the replica")

    # The PostgreSQL leader stops: the replica takes over.
    nodes[0].stop()
    wait_for(lambda: leader_of(nodes) is nodes[1], 120, "pg1 to take over")
    nodes[1].sql("INSERT INTO t VALUES ('two')")
    nodes[0].start()
    wait_for(lambda: nodes[0].role("replica"), 180, "pg0 to come back as a replica")
    wait_for(lambda: "two" in nodes[0].sql("SELECT v FROM t"), 60, "row two on pg0")

    # The petcd leader dies: Patroni goes on through the other members.
    victim = cluster.wait_leader()
    victim.kill()
    cluster.wait_leader(exclude=[victim])
    time.sleep(25)  # longer than the DCS TTL: the leader key must have been renewed
    leader = leader_of(nodes)
    assert leader is not None
    leader.sql("INSERT INTO t VALUES ('three')")
    other = nodes[1] if leader is nodes[0] else nodes[0]
    wait_for(lambda: "three" in other.sql("SELECT v FROM t"), 60, "row three replicated")
