"""Imported at start-up by a petcd member that bench/member_callgrind.py runs under
valgrind (this directory is put on its PYTHONPATH): LMDB maps 1 GiB instead of the
default 64 GiB (valgrind cannot map that much), and $PETCD_SRC, if set, names another
checkout's src to run instead of this one. Not part of petcd."""

from __future__ import annotations

import os
import sys

if os.environ.get("PETCD_SRC"):
    # Another checkout's petcd: ahead of the editable install's import hook.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["PETCD_SRC"])

from petcd.mvcc.backend import Backend

Backend.__init__.__kwdefaults__["map_size"] = 1 << 30
