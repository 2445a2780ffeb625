"""What auth costs: puts/s and serializable ranges/s with 64 clients on one member, auth
off and auth on (simple token; the clients are a non-root user whose role grants
READWRITE on the benchmark's prefix, so every call is permission-checked), petcd and
etcd 3.4 started the same way, side by side in one run.

    python bench/auth_bench.py                      # 5 s per cell
    python bench/auth_bench.py --repeat 3 --seconds 5

Load: bench/loadgen.py (worker processes, pre-serialized requests); with auth on every
call carries the token in the `token` metadata, as etcd's clients send it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loadgen import Cell, add_common_args, median, member_for, parse_common_args, preload, run_cell

from petcd.pb.authpb import auth_pb2 as authpb
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import MemberProcess


def enable_auth(address: str) -> str:
    """root (root role) and `bench` (READWRITE on bench/), auth on; bench's token."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        a = rpc_grpc.AuthStub(ch)
        a.UserAdd(rpc.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
        a.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=30)
        a.UserAdd(rpc.AuthUserAddRequest(name="bench", password="benchpw"), timeout=30)
        a.RoleAdd(rpc.AuthRoleAddRequest(name="bench"), timeout=30)
        perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=b"bench/",
                                 range_end=b"bench0")
        a.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(name="bench", perm=perm),
                              timeout=30)
        a.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="bench", role="bench"), timeout=30)
        a.AuthEnable(rpc.AuthEnableRequest(), timeout=30)
        token: str = a.Authenticate(rpc.AuthenticateRequest(name="bench", password="benchpw"),
                                    timeout=30).token
    return token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "put,range-serializable", clients="64")
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    targets, clients, workloads = parse_common_args(args)
    results: dict[tuple[str, str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        members: dict[str, MemberProcess] = {}
        metadata: dict[str, tuple[tuple[str, str], ...]] = {}
        try:
            for target in targets:
                for mode in ("off", "on"):
                    name = f"{target}/auth-{mode}"
                    m = members[name] = member_for(target, Path(tmp) / name.replace("/", "-"))
                    m.start()
                    preload(m.address, args.value_size)
                    metadata[name] = (("token", enable_auth(m.address)),) if mode == "on" \
                        else ()
            names = list(members)
            for wl in workloads:
                for c in clients:
                    runs: dict[str, list[Cell]] = {n: [] for n in names}
                    for _ in range(max(1, args.repeat)):
                        for n in names:  # all take turns: a noisy neighbour hurts them alike
                            m = members[n]
                            runs[n].append(run_cell([m], [m.address], wl, c, args.procs,
                                                    args.seconds, args.value_size,
                                                    metadata=metadata[n]))
                    for n in names:
                        cell = results[(n, wl, c)] = median(runs[n])
                        print(f"{n:15} {wl:19} clients={c:<3} {cell.rate:9.0f} ops/s  "
                              f"server cpu {cell.server_cpu / cell.seconds:4.2f} cores  "
                              f"{1e6 * cell.server_cpu / max(1, cell.ops):6.1f} us/op"
                              + (f"  errors {cell.errors}" if cell.errors else ""), flush=True)
        finally:
            for m in members.values():
                m.stop()
    def rate(target: str, mode: str, wl: str, c: int) -> float:
        return results[(f"{target}/auth-{mode}", wl, c)].rate

    print(f"\n{'workload':19} {'clients':>7} " + " ".join(f"{n:>17}" for n in names)
          + "   auth on / off")
    for wl in workloads:
        for c in clients:
            row = " ".join(f"{results[(n, wl, c)].rate:17.0f}" for n in names)
            ratios = "  ".join(
                f"{t}: {rate(t, 'on', wl, c) / max(1e-9, rate(t, 'off', wl, c)):.2f}"
                for t in targets)
            print(f"{wl:19} {c:>7} {row}   {ratios}")


if __name__ == "__main__":
    main()
