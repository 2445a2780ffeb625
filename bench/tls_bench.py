"""What TLS costs: puts/s and serializable ranges/s with 64 clients against one member,
plaintext and over TLS (server certificate verified by the clients; `--client-certs`
adds --client-cert-auth and a client certificate), petcd and real etcd 3.4 side by side,
all four started here and measured in turns in the same run.

    python bench/tls_bench.py                      # 5 s per cell
    python bench/tls_bench.py --repeat 3 --seconds 10

Certificates (ECDSA P-256) are made for the run in its temporary directory. The load
generator is bench/loadgen.py's (worker processes, grpc.aio, pre-serialized requests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loadgen import Cell, TLSCreds, median, member_for, preload, print_table, run_cell

from petcd.testing import MemberProcess, have_etcd
from petcd.testing_pki import ClientTLS, TestCA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,petcd-tls,etcd,etcd-tls",
                    help="comma list of petcd, petcd-tls, etcd, etcd-tls")
    ap.add_argument("--clients", default="64")
    ap.add_argument("--workloads", default="put,range-serializable")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--client-certs", action="store_true",
                    help="TLS targets also require client certificates (--client-cert-auth)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if not have_etcd():
        print("etcd not installed: skipping it", file=sys.stderr)
        targets = [t for t in targets if not t.startswith("etcd")]
    clients = [int(c) for c in args.clients.split(",")]
    workloads = args.workloads.split(",")
    results: dict[tuple[str, str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        ca = TestCA(Path(tmp) / "pki", "ca")
        server = ca.issue("server")
        tls_args = ["--cert-file", str(server.cert), "--key-file", str(server.key)]
        creds: TLSCreds = (ca.cert.read_bytes(), None, None)
        if args.client_certs:
            tls_args += ["--trusted-ca-file", str(ca.cert), "--client-cert-auth"]
            client = ca.issue("bench", hosts=())
            creds = (creds[0], client.key.read_bytes(), client.cert.read_bytes())
        members: dict[str, MemberProcess] = {}
        try:
            for t in targets:
                kind, _, tls = t.partition("-")
                m = member_for(kind, Path(tmp) / t, args=tls_args if tls else ())
                m.client_tls = ClientTLS(ca.cert, *(
                    (client.cert, client.key) if args.client_certs else (None, None))) \
                    if tls else None
                members[t] = m.start()
                preload(m.address, args.value_size, creds if tls else None)
            for wl in workloads:
                for c in clients:
                    runs: dict[str, list[Cell]] = {t: [] for t in targets}
                    for _ in range(max(1, args.repeat)):
                        for t in targets:  # in turns: a noisy neighbour hurts all alike
                            runs[t].append(run_cell(
                                [members[t]], [members[t].address], wl, c,
                                args.procs if c > 1 else 1, args.seconds, args.value_size,
                                creds if t.endswith("-tls") else None))
                    for t in targets:
                        cell = results[(t, wl, c)] = median(runs[t])
                        print(f"{t:10} {wl:19} clients={c:<3} {cell.rate:9.0f} ops/s  "
                              f"server cpu {cell.server_cpu / cell.seconds:4.2f} cores  "
                              f"client cpu {cell.client_cpu / cell.seconds:4.2f} cores"
                              + (f"  errors {cell.errors}" if cell.errors else ""), flush=True)
        finally:
            for m in members.values():
                m.stop()
    print_table("ops/s", results, targets, [(wl, c, wl) for wl in workloads for c in clients])
    for kind in ("petcd", "etcd"):
        if kind in targets and f"{kind}-tls" in targets:
            for wl in workloads:
                for c in clients:
                    plain, tls = results[(kind, wl, c)], results[(f"{kind}-tls", wl, c)]
                    print(f"{kind:6} {wl:19} clients={c:<3} TLS/plaintext "
                          f"{tls.rate / plain.rate:5.2f}  server CPU per op "
                          f"{1e6 * plain.server_cpu / plain.ops:6.0f} -> "
                          f"{1e6 * tls.server_cpu / tls.ops:6.0f} us")


if __name__ == "__main__":
    main()
