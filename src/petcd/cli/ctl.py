"""`petcdctl`: not written yet; real `etcdctl` works against petcd unchanged."""

from __future__ import annotations

import sys


def main() -> None:
    print("petcdctl is not implemented yet; use etcdctl (ETCDCTL_API=3), which works "
          "against petcd unchanged.", file=sys.stderr)
    raise SystemExit(2)
