"""Replay: scenario checking, the demo flows' scenarios through the real engines, JUnit and the CLI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.replay import replay
from ivr.errors import ConfigError
from ivr.replay.scenario import load_scenario
from ivr.testing.replay import assert_scenario_passes, run_scenario, scenario_files

ROOT = Path(__file__).resolve().parent.parent
HOTLINE = ROOT / "audio_fixtures" / "hotline"
KOREAN = ROOT / "audio_fixtures" / "korean"


@pytest.mark.parametrize("path", scenario_files(HOTLINE), ids=lambda p: p.stem)
def test_hotline_scenarios_pass_with_whisper(path: Path) -> None:
    assert_scenario_passes(path)


@pytest.mark.parametrize("path", scenario_files(KOREAN), ids=lambda p: p.stem)
def test_korean_scenarios_pass_with_vosk_grammars(path: Path) -> None:
    assert_scenario_passes(path)


def test_a_wrong_expectation_fails_with_the_transcript(tmp_path: Path) -> None:
    text = (HOTLINE / "agent_request.yaml").read_text().replace("queue: support", "queue: billing")
    scenario = tmp_path / "wrong.yaml"
    scenario.write_text(text.replace("../../flows/", f"{ROOT}/flows/"))
    for wav in HOTLINE.glob("*.wav"):
        (tmp_path / wav.name).write_bytes(wav.read_bytes())
    report = run_scenario(scenario)
    assert not report.passed
    assert any("expected a transfer to 'billing', got 'support'" in f for f in report.failures)
    with pytest.raises(AssertionError, match="BOT: Thanks for calling Acme"):
        assert_scenario_passes(scenario)


def test_the_billing_scenario_needs_a_billing_queue_that_reaches_an_agent(tmp_path: Path) -> None:
    from ivr.errors import FlowError

    text = (HOTLINE / "billing_to_agent.yaml").read_text().replace("../../flows/", f"{ROOT}/flows/")
    assert "agent: alice" in text and "queues:" in text
    queues = (ROOT / "config" / "queues.yaml").read_text()
    (tmp_path / "no_billing.yaml").write_text(queues.replace("  billing:", "  bililng:"))
    scenario = tmp_path / "billing.yaml"
    scenario.write_text(text.replace("../../config/queues.yaml", "no_billing.yaml"))
    for wav in ("billing.wav", "yes.wav"):
        (tmp_path / wav).write_bytes((HOTLINE / wav).read_bytes())
    with pytest.raises(FlowError, match="unknown queue 'billing'"):
        run_scenario(scenario)


def test_a_replayed_transfer_to_a_queue_nobody_staffs_ends_in_voicemail(tmp_path: Path) -> None:
    """The replay's ACD runs on the call clock like the server's: no agent logged in, no overflow, and the
    queue gives the caller back after its grace (here: to voicemail, support being the fallback queue too)."""
    (tmp_path / "queues.yaml").write_text(
        "agents:\n  alice: {uri: 'sip:alice@127.0.0.1'}\nqueues:\n  support: {}\n  billing: {}\n  orders: {}\n"
    )
    (tmp_path / "nobody.yaml").write_text(
        f"flow: {ROOT}/flows/hotline.yaml\nqueues: queues.yaml\nrate: 8000\n"
        "steps:\n  - dtmf: '0'\n  - bot: [connect you with an agent, couldn't connect you, leave a message]\n"
        "expect:\n  outcome: voicemail\n"
    )
    report = run_scenario(tmp_path / "nobody.yaml")
    assert report.passed, report.failures


def test_scenario_errors_are_all_reported_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow: nowhere.yaml\n"
        "rate: 44100\n"
        "colour: blue\n"
        "steps:\n"
        "  - say: missing.wav\n"
        "  - dtmf: '1'\n"
        "    silence: 2\n"
        "  - wave: hello\n"
        "expect:\n"
        "  intnet: agent\n"
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    messages = [str(d) for d in info.value.diagnostics]
    assert f"{bad}:1:7: flow file {tmp_path}/nowhere.yaml does not exist" in messages
    assert any(m.startswith(f"{bad}:2:7: rate must be 8000 or 16000") for m in messages)
    assert any(m.startswith(f"{bad}:3:1: unknown key 'colour'") for m in messages)
    assert any(m.startswith(f"{bad}:5:10: audio file") and "missing.wav does not exist" in m for m in messages)
    assert any(m.startswith(f"{bad}:6:5: a caller step has exactly one of") for m in messages)
    assert any(m.startswith(f"{bad}:8:5: unknown step key 'wave'") for m in messages)
    assert any(m.startswith(f"{bad}:10:3: unknown expectation 'intnet'") for m in messages)


def test_yaml_syntax_error_is_reported_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.yaml"
    bad.write_text("flow: x.yaml\nsteps:\n  - say: [unclosed\n")
    with pytest.raises(ConfigError, match=r"syntax.yaml:\d+:\d+: YAML syntax error"):
        load_scenario(bad)


def test_cli_writes_junit_and_exits_nonzero_on_failure(tmp_path: Path) -> None:
    good = HOTLINE / "order_status_dtmf.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: nowhere.yaml\nsteps: []\n")
    junit = tmp_path / "out" / "replay.xml"
    result = CliRunner().invoke(replay, [str(good), str(broken), "--junit", str(junit), "-q"])
    assert result.exit_code == 1
    assert "PASS order_status_dtmf" in result.output
    assert "broken.yaml:1:7: flow file" in result.output
    assert "1 passed, 1 failed" in result.output
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    case = suite.find("testcase")
    assert case is not None and case.get("name") == "order_status_dtmf"
    out = case.find("system-out")
    assert out is not None and "CALLER keys: 4444" in (out.text or "")


def test_record_writes_both_sides_of_the_call(tmp_path: Path) -> None:
    result = CliRunner().invoke(replay, [str(HOTLINE / "order_status_dtmf.yaml"), "--record", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    from ivr.audio.wavfile import read_wav

    bot = read_wav(tmp_path / "order_status_dtmf.bot.wav")
    caller = read_wav(tmp_path / "order_status_dtmf.caller.wav")
    assert bot.sample_rate == 8000 and abs(bot.duration - caller.duration) < 0.05
    assert max(abs(int(x)) for x in bot.samples()[: 8000 * 3]) > 1000  # the greeting is in the bot's audio
