"""Benchmarks and test peers ship inside the package but stay off the call path: only the tools that run
them (``ivr/bench``, ``ivr/testing``, the offline replay in ``ivr/replay`` and the CLI commands) import them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ivr"
TOOLS = ("ivr.bench", "ivr.testing", "ivr.flow.testing")
MAY_IMPORT_TOOLS = ("bench", "testing", "cli", "replay")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # lazy imports inside functions too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_on_the_call_path_imports_benchmarks_or_test_peers() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in MAY_IMPORT_TOOLS or relative == Path("flow", "testing.py"):
            continue
        for name in _imports(path):
            if any(name == tool or name.startswith(f"{tool}.") for tool in TOOLS):
                offenders.append(f"ivr/{relative} imports {name}")
    assert offenders == []


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ivr.bench.turns import run_turns_bench\n")
    assert "ivr.bench.turns" in _imports(module)
