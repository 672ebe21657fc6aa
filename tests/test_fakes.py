"""The shipped fakes (``ivr.testing.fakes``) let a flow designer replay a scenario without speech models."""

from __future__ import annotations

from pathlib import Path

from ivr.replay.runner import ReplayReport, ReplayRunner
from ivr.services import SpeechServices
from ivr.testing.fakes import FakeAsr, FakeTts

ROOT = Path(__file__).resolve().parent.parent
HOTLINE = ROOT / "audio_fixtures" / "hotline"


class ScriptedSpeechRunner(ReplayRunner):
    """A replay runner whose every call hears the scripted texts and speaks silence."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.asr = FakeAsr(texts)
        self.speech = SpeechServices(asr=self.asr, tts=FakeTts())

    def services(self, engine: str, model: str | None, language: str = "en") -> SpeechServices:
        return self.speech

    def close(self) -> None:
        self.speech.shutdown()


def _agent_request(tmp_path: Path, heard: str) -> tuple[ReplayReport, FakeAsr]:
    """Replay the hotline's agent_request scenario, its caller's one utterance heard as ``heard``."""
    scenario = tmp_path / "agent_request.yaml"
    scenario.write_text((HOTLINE / "agent_request.yaml").read_text().replace("../../flows/", f"{ROOT}/flows/"))
    (tmp_path / "agent.wav").write_bytes((HOTLINE / "agent.wav").read_bytes())
    runner = ScriptedSpeechRunner([heard])
    try:
        return runner.run_file(scenario), runner.asr
    finally:
        runner.close()


def test_a_scenario_passes_with_scripted_recognition(tmp_path: Path) -> None:
    report, asr = _agent_request(tmp_path, "talk to a person")
    assert report.passed, report.render()
    assert asr.texts == []  # the caller's one utterance took the one scripted text


def test_what_the_fake_recogniser_hears_decides_the_call(tmp_path: Path) -> None:
    report, _ = _agent_request(tmp_path, "where is my order")
    assert not report.passed
    assert "expected intent 'agent', detected ['order_status']" in report.failures
    assert "Please say or key in your order number" in report.render()
