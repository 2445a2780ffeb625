"""A petcd cluster of member processes for tests and benchmarks: start, grow, shrink,
find the leader, and collect logs; clusters of petcd or etcd started alike
(start_members), and what a test started, killed after it (Started)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from petcd.testing.processes import EtcdProcess, MemberProcess, PetcdProcess, free_port

if TYPE_CHECKING:
    from petcd.testing_pki import ClientTLS

# Fast elections for tests (etcd's 1:10 ratio): failovers take a second, not ten.
FAST_ELECTIONS = ("--heartbeat-interval", "50", "--election-timeout", "500")


class MemberStatus:
    """What a member's Maintenance.Status says (None fields when it did not answer)."""

    __slots__ = ("applied", "committed", "id", "is_learner", "leader", "term")

    def __init__(self, member_id: int, leader: int, term: int, committed: int, applied: int,
                 is_learner: bool) -> None:
        self.id = member_id
        self.leader = leader
        self.term = term
        self.committed = committed
        self.applied = applied
        self.is_learner = is_learner


def member_status(m: MemberProcess, timeout: float = 1.0) -> MemberStatus | None:
    """Status of one running member; None if it does not answer in time."""
    import grpc

    from petcd.pb.etcdserverpb import rpc_pb2

    if not m.running:
        return None
    try:
        with m.grpc_channel() as ch:
            status = ch.unary_unary(
                "/etcdserverpb.Maintenance/Status",
                request_serializer=rpc_pb2.StatusRequest.SerializeToString,
                response_deserializer=rpc_pb2.StatusResponse.FromString)
            r = status(rpc_pb2.StatusRequest(), timeout=timeout)
    except grpc.RpcError:
        return None
    return MemberStatus(r.header.member_id, r.leader, r.raftTerm, r.raftIndex,
                        r.raftAppliedIndex, r.isLearner)


class PetcdCluster:
    """N petcd members as separate processes on loopback ports (a tmp dir each), for
    tests and benchmarks: start them, find the leader, stop/kill/pause/restart members,
    add new ones (`member add` first, then `add_process`). Use as a context manager, or
    call `kill_all()`: every process it started is ended.

        with PetcdCluster(tmp_path, 3) as c:
            leader = c.wait_leader()
            c.kill(leader); c.wait_leader(exclude=[leader]); c.restart(leader)
    """

    def __init__(self, base_dir: str | os.PathLike[str], size: int = 3, *,
                 args: Sequence[str] = (), token: str = "petcd-test-cluster",
                 env: Mapping[str, str] | None = None, peer_scheme: str = "http",
                 client_tls: ClientTLS | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.peer_scheme = peer_scheme
        self.client_tls = client_tls  # https client URLs (args carry --cert-file etc.)
        self.size = size
        self.args = list(args)
        self.token = token
        self.env = dict(env or {})
        self.members: list[PetcdProcess] = []
        self._ids: dict[str, int] = {}
        self._generation = 0

    # -- lifecycle

    def start(self, timeout: float = 60.0) -> PetcdCluster:
        """Start every member and wait until each serves (a leader exists). Retried on
        new ports if another process took one of ours meanwhile."""
        for attempt in range(3):
            self._make_members()
            for m in self.members:
                m._spawn()
            try:
                for m in self.members:
                    m.wait_ready(timeout)
                return self
            except (RuntimeError, TimeoutError):
                logs = "".join(m.log_tail(2000).lower() for m in self.members)
                self.kill_all()
                if "address already in use" not in logs or attempt == 2:
                    raise
        return self

    def _make_members(self) -> None:
        self._generation += 1
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.members = [
            PetcdProcess(self.base_dir / f"g{self._generation}-m{i}", name=f"m{i}",
                         args=[*self.args, "--initial-cluster-token", self.token],
                         env=self.env, peer_scheme=self.peer_scheme,
                         client_tls=self.client_tls)
            for i in range(self.size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def add_process(self, name: str, *, args: Sequence[str] = ()) -> PetcdProcess:
        """A process for a member already added with `member add` (not started): it
        joins with --initial-cluster-state existing."""
        m = PetcdProcess(self.base_dir / f"g{self._generation}-{name}", name=name,
                         args=[*self.args, "--initial-cluster-token", self.token, *args],
                         env=self.env, initial_cluster_state="existing",
                         peer_scheme=self.peer_scheme, client_tls=self.client_tls)
        m.initial_cluster = ",".join([*(f"{x.name}={x.peer_url}" for x in self.members),
                                      f"{name}={m.peer_url}"])
        self.members.append(m)
        return m

    def kill_all(self) -> None:
        for m in self.members:
            m.kill()

    def __enter__(self) -> PetcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    # -- looking at it

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members if m.running]

    def running(self) -> list[PetcdProcess]:
        return [m for m in self.members if m.running]

    def member(self, name: str) -> PetcdProcess:
        return next(m for m in self.members if m.name == name)

    def member_id(self, m: MemberProcess) -> int:
        """The member's ID (asked once, while it runs)."""
        mid = self._ids.get(m.name)
        if mid is None:
            st = member_status(m, timeout=5.0)
            if st is None:
                raise RuntimeError(f"member {m.name} does not answer")
            mid = self._ids[m.name] = st.id
        return mid

    def statuses(self, among: Sequence[PetcdProcess] | None = None
                 ) -> dict[str, MemberStatus]:
        out = {}
        for m in among if among is not None else self.running():
            st = member_status(m)
            if st is not None:
                out[m.name] = st
                self._ids.setdefault(m.name, st.id)
        return out

    def leader(self, among: Sequence[PetcdProcess] | None = None) -> PetcdProcess | None:
        """The member that the newest term's answers name as leader, if it answers
        itself and agrees (None while there is none)."""
        statuses = self.statuses(among)
        best = max(statuses.values(), key=lambda s: s.term, default=None)
        if best is None or best.leader == 0:
            return None
        for name, st in statuses.items():
            if st.id == best.leader and st.leader == st.id and st.term == best.term:
                return self.member(name)
        return None

    def wait_leader(self, timeout: float = 30.0, *, exclude: Sequence[MemberProcess] = ()
                    ) -> PetcdProcess:
        """Poll until the running members (but `exclude`) agree on a leader."""
        deadline = time.monotonic() + timeout
        while True:
            among = [m for m in self.running() if m not in exclude]
            leader = self.leader(among)
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader among {[m.name for m in among]} after "
                                   f"{timeout}s: {self._describe(among)}")
            time.sleep(0.05)

    def followers(self, leader: MemberProcess | None = None) -> list[PetcdProcess]:
        lead = leader or self.wait_leader()
        return [m for m in self.running() if m is not lead]

    def wait_applied(self, index: int, members: Sequence[PetcdProcess] | None = None,
                     timeout: float = 30.0) -> None:
        """Until every given (default: running) member applied at least `index`."""
        deadline = time.monotonic() + timeout
        targets = list(members) if members is not None else self.running()
        while True:
            statuses = self.statuses(targets)
            if len(statuses) == len(targets) and \
                    all(s.applied >= index for s in statuses.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not applied up to {index} after {timeout}s: "
                                   f"{self._describe(targets)}")
            time.sleep(0.05)

    def _describe(self, members: Sequence[MemberProcess]) -> str:
        parts = []
        for m in members:
            st = member_status(m)
            parts.append(f"{m.name}: " + ("no answer" if st is None else
                                          f"leader {st.leader:x} term {st.term} "
                                          f"commit {st.committed} applied {st.applied}"))
        return "; ".join(parts)

    def dump_logs(self, chars: int = 6000) -> str:
        return "".join(f"\n===== {m.name} ({m.log_path}) =====\n{m.log_tail(chars)}\n"
                       for m in self.members)


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and one peer certificate (server and client use, for 127.0.0.1) signed by it:
    (ca, cert, key) paths in `directory` (petcd.testing_pki has the general factory)."""
    from petcd.testing_pki import TestCA

    ca = TestCA(directory, "pki")
    peer = ca.issue("petcd peer", hosts=("127.0.0.1",))
    return ca.cert, peer.cert, peer.key


def start_members(kind: str, base: Path, size: int, args: Sequence[str] = (), *,
                  token: str = "petcd-test-cluster") -> list[MemberProcess]:
    """`size` members of petcd or etcd ("petcd"/"etcd") forming one cluster on free
    loopback ports, each serving when this returns. Started again on new ports when
    another process took one of ours meanwhile; on failure, their logs go to stderr."""
    cls = PetcdProcess if kind == "petcd" else EtcdProcess
    for attempt in range(3):
        sub = base / f"{kind}-try{attempt}"
        sub.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        members: list[MemberProcess] = [
            cls(sub / f"m{i}", name=f"m{i}", client_port=c, peer_port=p,
                initial_cluster=initial if size > 1 else None,
                args=[*args, "--initial-cluster-token", token])
            for i, (c, p) in enumerate(ports)]
        try:
            for m in members:
                m.start(wait=False)
            for m in members:
                m.wait_ready(60)
            return members
        except BaseException:
            logs = "".join(m.log_tail(3000) for m in members)
            for m in members:
                m.kill()
            if "address already in use" in logs.lower() and attempt < 2:
                continue
            sys.stderr.write(logs)
            raise
    raise AssertionError("unreachable")


T = TypeVar("T", PetcdCluster, MemberProcess)


class Started:
    """What a pytest fixture or test started (clusters, member processes): killed when
    the block ends, their logs written to stderr when a test failed meanwhile.

        with Started(request) as started:
            yield started.add(PetcdCluster(tmp, 3, args=FAST_ELECTIONS)).start()
    """

    def __init__(self, request: Any) -> None:
        self._session = request.session  # pytest's: counts failed tests
        self._failed_before = self._session.testsfailed
        self.made: list[PetcdCluster | MemberProcess] = []

    def add(self, thing: T) -> T:
        self.made.append(thing)
        return thing

    def __enter__(self) -> Started:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None or self._session.testsfailed > self._failed_before:
            for t in self.made:
                sys.stderr.write(t.dump_logs() if isinstance(t, PetcdCluster)
                                 else f"\n===== {t.name} =====\n{t.log_tail()}\n")
        for t in self.made:
            if isinstance(t, PetcdCluster):
                t.kill_all()
            else:
                t.kill()
