"""``ivr serve`` refuses to start on invalid flows and says where the problems are."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_serve_refuses_an_invalid_flow_and_lists_every_problem(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "flows" / "hotline.yaml", flows / "hotline.yaml")
    broken = flows / "broken.yaml"
    broken.write_text(
        "version: 1\nname: broken\nlanguage: en-US\nstart: greet\nnodes:\n"
        "  greet:\n    say: hello\n    next: menuu\n"
        "  menu:\n    ask: {prompt: hi}\n    on: {nothing: greet}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ivr.cli.main", "serve", "--flows", str(flows), "--sip-port", "0",
         "--web-port", "0", "--database", str(tmp_path / "ivr.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}:8:11:" in result.stderr and "menuu" in result.stderr and "did you mean" in result.stderr
    assert "nothing" in result.stderr  # the undefined intent is reported in the same run
