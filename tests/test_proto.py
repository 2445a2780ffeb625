"""The wire interface: our generated code is current, and our .proto files
match etcd's own (from Debian's golang-etcd-server-dev) name for name,
number for number, type for type."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from petcd.pb import generate

ETCD_SRC = Path("/usr/share/gocode/src")
ETCD_PROTOS = {
    "etcd/etcdserver/etcdserverpb/rpc.proto": "petcd/pb/etcdserverpb/rpc.proto",
    "etcd/mvcc/mvccpb/kv.proto": "petcd/pb/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto": "petcd/pb/authpb/auth.proto",
    "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto": "petcd/pb/v3lockpb/v3lock.proto",
    "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto":
        "petcd/pb/v3electionpb/v3election.proto",
}


def test_generated_code_is_current(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert fresh, "protoc produced nothing"
    for rel in fresh:
        committed = generate.SRC_ROOT / rel
        assert committed.exists(), f"{rel} is not committed; run `make proto`"
        assert filecmp.cmp(committed, tmp_path / rel, shallow=False), (
            f"{rel} is stale; run `make proto`"
        )


def _descriptor_set(tmp_path: Path, includes: list[Path], files: list[str]) -> (
    descriptor_pb2.FileDescriptorSet
):
    import grpc_tools

    out = tmp_path / "set.pb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}",
           *(f"-I{p}" for p in includes), f"--descriptor_set_out={out}", *files]
    subprocess.run(cmd, check=True, capture_output=True)
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _index(fds: descriptor_pb2.FileDescriptorSet) -> tuple[dict[str, object], dict[str, object]]:
    """Map full names to message and service descriptors."""
    messages: dict[str, object] = {}
    services: dict[str, object] = {}

    def walk(prefix: str, msgs: object) -> None:
        for m in msgs:  # type: ignore[attr-defined]
            name = f"{prefix}.{m.name}"
            messages[name] = m
            walk(name, m.nested_type)

    for f in fds.file:
        walk(f.package, f.message_type)
        for s in f.service:
            services[f"{f.package}.{s.name}"] = s
    return messages, services


@pytest.mark.skipif(not (ETCD_SRC / "go.etcd.io/etcd").exists(),
                    reason="golang-etcd-server-dev is not installed (make test installs it)")
def test_wire_compatible_with_etcd(tmp_path: Path) -> None:
    theirs = _descriptor_set(
        tmp_path,
        [ETCD_SRC / "go.etcd.io", ETCD_SRC / "github.com/gogo/protobuf",
         ETCD_SRC / "github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis"],
        list(ETCD_PROTOS),
    )
    ours = _descriptor_set(tmp_path, [generate.SRC_ROOT], list(ETCD_PROTOS.values()))
    their_msgs, their_svcs = _index(theirs)
    our_msgs, our_svcs = _index(ours)

    checked = 0
    for name, their in their_msgs.items():
        if name.split(".")[0] not in {"etcdserverpb", "mvccpb", "authpb", "v3lockpb",
                                      "v3electionpb"}:
            continue
        if name.startswith("etcdserverpb.") and name.split(".")[1] in ETCD_INTERNAL:
            continue
        assert name in our_msgs, f"message {name} is missing"
        our_fields = {f.number: f for f in our_msgs[name].field}  # type: ignore[attr-defined]
        for f in their.field:  # type: ignore[attr-defined]
            mine = our_fields.get(f.number)
            assert mine is not None, f"{name}: field {f.name}={f.number} is missing"
            assert (mine.name, mine.type, mine.label, mine.type_name) == (
                f.name, f.type, f.label, f.type_name), f"{name}.{f.name} differs"
            checked += 1
    for name, their in their_svcs.items():
        assert name in our_svcs, f"service {name} is missing"
        our_methods = {m.name: m for m in our_svcs[name].method}  # type: ignore[attr-defined]
        for m in their.method:  # type: ignore[attr-defined]
            mine = our_methods.get(m.name)
            assert mine is not None, f"{name}.{m.name} is missing"
            assert (mine.input_type, mine.output_type, mine.client_streaming,
                    mine.server_streaming) == (m.input_type, m.output_type,
                                               m.client_streaming, m.server_streaming)
    assert checked > 200  # 242 fields in etcd 3.4


# Messages of etcd's own peer-to-peer and storage formats, which no client sees.
ETCD_INTERNAL = {
    "RequestHeader", "InternalRaftRequest", "EmptyResponse", "InternalAuthenticateRequest",
    "Request", "Metadata",
}


def test_varint_matches_protobuf() -> None:
    """petcd.pb.wire.varint (its one- to four-byte fast paths too) encodes as protobuf
    does; a negative number is refused, not encoded."""
    from petcd.pb.mvccpb.kv_pb2 import KeyValue
    from petcd.pb.wire import varint, varint_len

    edges = [2**k + d for k in (14, 21, 28, 35) for d in (-1, 0, 1)]
    for n in [*range(0, 20000), *range(2**21 - 300, 2**21 + 300, 7), *edges, 2345678,
              123456789, 2**63 - 1]:
        # KeyValue.version is field 4, an int64: tag 0x20, then the varint
        assert KeyValue(version=n).SerializeToString() in (b"", b"\x20" + varint(n))
        assert len(varint(n)) == varint_len(n)
    with pytest.raises(ValueError):
        varint(-1)
