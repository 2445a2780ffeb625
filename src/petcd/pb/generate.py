"""Regenerate the protobuf and gRPC modules of petcd.pb from its .proto files.

The generated modules are committed so that petcd installs without a build
step; tests/test_proto.py fails when they drift from the .proto sources.
Usage: python -m petcd.pb.generate [OUTPUT_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

SRC_ROOT = Path(__file__).resolve().parents[2]  # the directory holding petcd/
PB_DIR = SRC_ROOT / "petcd" / "pb"


def proto_files() -> list[Path]:
    return sorted(PB_DIR.rglob("*.proto"))


def generate(out_root: Path) -> None:
    from grpc_tools import protoc  # dev dependency only

    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{SRC_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(SRC_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC_ROOT)


if __name__ == "__main__":
    main()
