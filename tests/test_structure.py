"""The shape of the tree, checked: each package imports only the layers below it (the
picture in docs/ARCHITECTURE.md), the Raft core and the client stay free of what they
must not know, and no hand-written module grows past ~500 lines unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "petcd"

# What each top-level part of petcd may import (besides itself). A new edge is a design
# decision: add it here only if it points down the layers.
BOTTOM = {"errors", "pb"}  # errors.py and the wire types: everyone may use them
ALLOWED: dict[str, set[str]] = {
    "pb": set(),
    "errors": set(),
    "tls": set(),
    "raft": set(),
    "wal": {"raft"},
    "transport": {"tls"},
    "mvcc": set(),
    "lease": {"mvcc"},
    "auth": {"mvcc"},
    "snapshot": {"mvcc", "lease"},
    "v2store": set(),
    "server": {"raft", "wal", "mvcc", "lease", "auth", "transport", "snapshot", "tls",
               "v2store"},
    "api": {"server", "raft", "mvcc", "lease", "auth", "tls", "v2store"},
    "client": set(),
    "compat": {"client"},
    "playground": {"transport"},
    "cli": {"api", "server", "auth", "snapshot", "playground", "tls", "client"},
    "testing_pki": set(),
    "testing": {"mvcc", "testing_pki"},
    "__main__": {"cli"},
}
# The package's own __init__ (version constants) is importable from anywhere.
ROOT_NAMES = {"__version__", "ETCD_API_VERSION"}

# The Raft core is a pure state machine: no clocks, sockets, files, threads or loops.
RAFT_FORBIDDEN = {"asyncio", "socket", "ssl", "os", "io", "time", "threading", "select",
                  "selectors", "subprocess", "logging", "pathlib", "shutil", "concurrent"}

MAX_LINES = 500
# Modules allowed past MAX_LINES, each with its reason.
OVERSIZE: set[str] = set()


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The petcd parts (and root names) a module imports, at any depth in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "petcd":
                out.update(a.name for a in node.names)
                continue
        else:
            continue
        out.update(n.split(".")[1] for n in names if n.startswith("petcd."))
    return out


def _stdlib_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "pb" not in p.relative_to(SRC).parts[:1])


def test_every_part_is_known() -> None:
    parts = {_part(p) for p in SRC.rglob("*.py")} - {"__init__"}
    unknown = parts - set(ALLOWED)
    assert not unknown, f"new top-level parts: place them in ALLOWED: {unknown}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    part = _part(path)
    if part == "__init__":
        return
    allowed = ALLOWED[part] | BOTTOM | ROOT_NAMES | {part}
    wrong = _imports(path) - allowed
    assert not wrong, f"{path.relative_to(SRC)} ({part}) imports {sorted(wrong)}"


def test_raft_core_does_no_io() -> None:
    for path in (SRC / "raft").rglob("*.py"):
        bad = _stdlib_imports(path) & RAFT_FORBIDDEN
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_client_knows_only_pb() -> None:
    for path in (SRC / "client").rglob("*.py"):
        assert _imports(path) <= {"client", "pb"}, path


def test_modules_stay_small() -> None:
    big = {}
    for path in _modules():
        name = str(path.relative_to(SRC))
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and name not in OVERSIZE:
            big[name] = n
    assert not big, f"split these along their seams (or list them with a reason): {big}"


def test_oversize_list_is_current() -> None:
    """An entry that has been split must leave the list."""
    small = [name for name in OVERSIZE if not (SRC / name).exists()
             or len((SRC / name).read_text().splitlines()) <= MAX_LINES]
    assert not small, f"no longer oversize, remove from OVERSIZE: {small}"


# Modules allowed to raise the shared constants (none left).
SHARED_ERRORS_ALLOWED: tuple[str, ...] = ()


def _raises_shared_error(node: ast.AST) -> bool:
    """`raise errors.X`, `set_exception(errors.X)` or `e is errors.X`: the shared kind
    used where a fresh error (or e.kind) belongs."""
    def is_kind(e: ast.AST | None) -> bool:
        return (isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name)
                and e.value.id == "errors" and e.attr.isupper())
    if isinstance(node, ast.Raise):
        return is_kind(node.exc)
    if isinstance(node, ast.Compare) and any(isinstance(op, ast.Is | ast.IsNot)
                                             for op in node.ops):
        # `e is errors.X` misses fresh errors: compare e.kind
        return any(is_kind(c) for c in node.comparators) and not (
            isinstance(node.left, ast.Attribute) and node.left.attr == "kind")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "set_exception" and node.args:
        return is_kind(node.args[0])
    return False


def test_errors_are_raised_fresh() -> None:
    """petcd.errors constants are kinds: raise errors.X(), never the shared instance."""
    bad = []
    for path in _modules():
        name = str(path.relative_to(SRC))
        if name.startswith(SHARED_ERRORS_ALLOWED):
            continue
        bad.extend(f"{name}:{getattr(node, 'lineno', 0)}"
                   for node in ast.walk(ast.parse(path.read_text(), name))
                   if _raises_shared_error(node))
    assert not bad, f"raise a fresh error (errors.X()): {bad}"
