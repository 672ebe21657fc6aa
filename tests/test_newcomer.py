"""What a newcomer meets first: one database for every command, a start-up banner that tells the truth
about the flows, and a demo hotline whose order look-up works without writing an order service."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from ivr.demo import DemoOrderApi
from ivr.flow.loader import load_flow
from ivr.flow.testing import KeywordClassifier, ScriptedCall
from ivr.services import SpeechServices
from ivr.speech.interfaces import RecognizerCapabilities
from ivr.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def _cli() -> object:
    from ivr.cli.main import _register, cli

    _register()
    return cli


def test_users_and_serve_use_the_same_database_and_honour_ivr_db(tmp_path: Path, monkeypatch) -> None:
    from ivr.cli.serve import serve

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IVR_DB", raising=False)
    result = CliRunner().invoke(_cli(), ["users", "add", "alice", "--role", "agent", "--password", "correct horse"])
    assert result.exit_code == 0, result.output
    database = serve.make_context("serve", [], resilient_parsing=True).params["database"]
    assert [u["name"] for u in open_store(database).list_users()] == ["alice"]  # the server sees her

    monkeypatch.setenv("IVR_DB", str(tmp_path / "site.db"))
    result = CliRunner().invoke(_cli(), ["users", "add", "bob", "--password", "correct horse"])
    assert result.exit_code == 0, result.output
    assert serve.make_context("serve", [], resilient_parsing=True).params["database"] == str(tmp_path / "site.db")
    assert [u["name"] for u in open_store(tmp_path / "site.db").list_users()] == ["bob"]


class _NoAsr:
    name = "fake"
    capabilities = RecognizerCapabilities()

    def new_recognizer(self, sample_rate: int, grammar: object = None) -> object:
        raise AssertionError("no call in this test")


class _NoTts:
    def synthesize(self, text: str, sample_rate: int) -> bytes:
        return b""

    def stream(self, text: str, sample_rate: int) -> object:
        return iter(())


@pytest.fixture
def server(tmp_path: Path) -> object:
    from ivr.server import IvrServer, ServerConfig
    from ivr.sip.config import SipConfig
    from ivr.sip.edge import EdgeOptions

    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "flows" / "hotline.yaml", flows)
    shutil.copytree(ROOT / "flows" / "knowledge", flows / "knowledge")  # the hotline's FAQ answers
    (flows / "spanish.yaml").write_text(
        "version: 1\nname: spanish\nlanguage: es-ES\nnumbers: ['3000']\nstart: bye\n"
        "speech: {engine: vosk, model: vosk-model-small-es-0.42}\nnodes:\n  bye: {hangup: 'Adiós.'}\n")
    services = SpeechServices(asr=_NoAsr(), tts=_NoTts())  # type: ignore[arg-type]
    config = ServerConfig(flows_dir=flows, sip=SipConfig(host="127.0.0.1", port=0),
                          edge=EdgeOptions(mode="none"), database=str(tmp_path / "ivr.db"), demo_api_port=0)
    server = IvrServer(config, services={"whisper": services})
    yield server
    if server.demo_api is not None:
        server.demo_api.stop()
    services.shutdown()


def test_the_banner_lists_only_the_flows_served_and_says_why_not_the_others(server) -> None:
    from ivr.cli.serve import serve_banner

    server.load_engines()
    server.start_demo_api()
    banner = serve_banner(server, "127.0.0.1")
    first, *others = banner.splitlines()
    assert first.startswith("ivr: serving hotline (1000, hotline) on sip:127.0.0.1")
    assert "spanish" not in first
    [refused] = [line for line in others if "spanish" in line]
    assert refused.startswith("ivr: not serving spanish: its vosk:vosk-model-small-es-0.42 recognizer cannot load")
    assert "ivr models list" in refused  # what to do about it
    assert f"demo order API on {server.demo_api.base_url}" in banner
    assert not server.route("3000") and server.route("1000")


def test_the_demo_hotline_looks_orders_up_without_an_order_service() -> None:
    demo = DemoOrderApi(port=0)
    demo.start()
    services = SpeechServices(asr=_NoAsr(), tts=_NoTts())  # type: ignore[arg-type]
    try:
        flow = load_flow(ROOT / "flows" / "hotline.yaml", classifier_factory=KeywordClassifier.build)
        call = ScriptedCall(flow, {"caller": "+1555", "api_base": demo.base_url}, http=services.http)
        call.press("1")
        call.press("12345#")
        call.press("1")  # "I heard 1 2 3 4 5. Is that right?" yes
        assert "shipped on Monday" in " ".join(call.said())
        assert requests.get(f"{demo.base_url}/orders/99999", timeout=5).status_code == 404
    finally:
        demo.stop()
        services.shutdown()


def test_serve_starts_the_demo_order_api_unless_told_otherwise(server) -> None:
    server.config.variables["api_base"] = "https://orders.example.com"
    server.start_demo_api()
    assert server.demo_api is None  # the flows talk to a real service
    del server.config.variables["api_base"]
    server.start_demo_api()
    assert requests.get(f"{server.demo_api.base_url}/orders/12345", timeout=5).json()["status"] == "shipped"
