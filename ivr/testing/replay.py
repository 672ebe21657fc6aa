"""Run replay scenarios from pytest, the way the project tests its own flows.

    from ivr.testing.replay import scenario_files, assert_scenario_passes

    @pytest.mark.parametrize("path", scenario_files("audio_fixtures/hotline"), ids=lambda p: p.stem)
    def test_hotline(path):
        assert_scenario_passes(path)
"""

from __future__ import annotations

import atexit
from pathlib import Path

from ivr.replay.runner import ReplayReport, ReplayRunner

_runner: ReplayRunner | None = None


def shared_runner() -> ReplayRunner:
    """One runner per test process, so speech engines load once."""
    global _runner
    if _runner is None:
        _runner = ReplayRunner()
        atexit.register(_runner.close)
    return _runner


def scenario_files(directory: str | Path) -> list[Path]:
    """The scenario files (``*.yaml``) under a folder, sorted."""
    return sorted(Path(directory).rglob("*.yaml"))


def run_scenario(path: str | Path) -> ReplayReport:
    """Run one scenario through the real pipeline and return its report."""
    return shared_runner().run_file(path)


def assert_scenario_passes(path: str | Path) -> ReplayReport:
    """Run a scenario and fail the test with its transcript and failed expectations if any."""
    report = run_scenario(path)
    if not report.passed:
        raise AssertionError(report.render())
    return report
