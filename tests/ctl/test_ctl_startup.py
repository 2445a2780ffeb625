"""petcdctl's start-up: `petcdctl get k` loads gRPC and the KV messages and nothing it
does not need (the list below is what an earlier petcdctl imported for nothing). The
CPU figures are measured by hand (see docs/ARCHITECTURE.md), not timed here."""

from __future__ import annotations

import subprocess
import sys

from petcd.testing import SRC_DIR, MemberProcess

PROBE = """
import sys
from petcd.cli.ctl import main
try:
    main(sys.argv[1:])
finally:
    sys.stdout.flush()
    sys.stderr.write(" ".join(sorted(sys.modules)) + "\\n")
"""

NOT_NEEDED = ["argparse", "json", "uuid", "getpass", "dataclasses",
              "petcd.pb.etcdserverpb.rpc_pb2_grpc", "petcd.client", "petcd.server",
              "petcd.cli.ctl.snapshot"]


def _modules(endpoint: str, *args: str) -> tuple[bytes, set[str]]:
    p = subprocess.run([sys.executable, "-c", PROBE, "--endpoints", endpoint, *args],
                       capture_output=True, env={"PYTHONPATH": str(SRC_DIR)}, timeout=60,
                       check=True)
    return p.stdout, set(p.stderr.decode().split()[-1000:])


def test_get_imports_only_what_it_needs(petcd: MemberProcess) -> None:
    out, mods = _modules(petcd.address, "put", "startup/k", "v")
    assert out == b"OK\n"
    out, mods = _modules(petcd.address, "get", "startup/k")
    assert out == b"startup/k\nv\n"
    assert "grpc" in mods and "petcd.pb.etcdserverpb.rpc_pb2" in mods  # (the probe works)
    assert sorted(m for m in NOT_NEEDED if m in mods) == []
    # json output loads json (and only then)
    out, mods = _modules(petcd.address, "get", "startup/k", "-w", "json")
    assert out.startswith(b'{"header"') and "json" in mods
