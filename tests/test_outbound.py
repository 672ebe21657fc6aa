"""Outbound calls for CRMs (``POST /api/calls/outbound``): validation, the record of an unanswered call, and
the result of a SIP status. The real-SIP calls are in tests/test_queue_sip.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ivr.outbound import OutboundCalls
from ivr.sip.config import RegistrationConfig, SipConfig
from ivr.sip.server import outbound_result
from ivr.store import Store, open_store
from ivr.testing import waiting


class FakeSip:
    """Records the outbound calls asked for; ``results`` answers them later."""

    def __init__(self, running: bool = True) -> None:
        self.running = running
        self.placed: list[tuple[str, str, str, str, float]] = []
        self.results: dict[str, Callable[[str, str], None]] = {}

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None:
        self.placed.append((request, uri, caller, called, ring_timeout))
        self.results[request] = on_result


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return open_store(str(tmp_path / "ivr.db"))


def client_for(store: Store, outbound: OutboundCalls | None) -> tuple[Any, dict[str, str], dict[str, str]]:
    from werkzeug.security import generate_password_hash

    from ivr.web import create_app, new_token

    for name, role in (("sue", "supervisor"), ("ann", "agent")):
        store.add_user(name, generate_password_hash(f"{name}-password", "pbkdf2:sha256:1000"), role, 0.0)
    app = create_app(store, None, {"secret_key": "test"})
    if outbound is not None:
        app.extensions["ivr.outbound"] = outbound
    sue = {"Authorization": f"Bearer {new_token(store, 'sue')}"}
    ann = {"Authorization": f"Bearer {new_token(store, 'ann')}"}
    return app.test_client(), sue, ann


def test_api_places_an_outbound_call_with_a_supervisor_token_and_says_what_to_fix(store: Store) -> None:
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["hotline", "survey"], store)
    client, sue, ann = client_for(store, outbound)
    body = {"number": "sip:amy@127.0.0.1:5090", "flow": "survey", "variables": {"order": "1234"}}
    assert client.post("/api/calls/outbound", json=body).status_code in (400, 401)
    assert client.post("/api/calls/outbound", json=body, headers=ann).status_code == 403
    resp = client.post("/api/calls/outbound", json=body, headers=sue)
    assert resp.status_code == 201, resp.data
    made = resp.get_json()
    assert made["call_id"].startswith("outbound-") and made["state"] == "calling" and made["flow"] == "survey"
    [(request, uri, caller, called, _)] = sip.placed
    assert (request, uri, caller, called) == (made["call_id"], "sip:amy@127.0.0.1:5090", "ivr",
                                              "sip:amy@127.0.0.1:5090")
    call = store.get_call(made["call_id"])
    assert call is not None and call["called"] == "sip:amy@127.0.0.1:5090" and call["flow"] == "survey"
    assert [e["kind"] for e in call["events"]] == ["outbound"]
    assert call["events"][0]["data"]["flow"] == "survey" and not call["ended_at"]
    pending = outbound.take(made["call_id"])
    assert pending is not None and pending.variables == {"order": "1234"}
    assert outbound.take(made["call_id"]) is None  # once only

    def error(payload: dict[str, Any], status: int = 400) -> str:
        resp = client.post("/api/calls/outbound", json=payload, headers=sue)
        assert resp.status_code == status, resp.data
        return str(resp.get_json()["error"])

    assert "flow must be one of: hotline, survey" in error({"number": "+15550100", "flow": "nope"})
    assert "flow must be one of" in error({"number": "+15550100"})
    assert "number must be a SIP URI" in error({"flow": "survey"})
    assert "number must be a SIP URI" in error({"number": "call me", "flow": "survey"})
    assert "variables must be a JSON object" in error({"number": "sip:a@b", "flow": "survey", "variables": [1]})
    # a plain number goes through the registrar, and this server registers nowhere
    assert "cannot route '+15550100'" in error({"number": "+15550100", "flow": "survey"})
    sip.running = False
    assert "SIP is not running" in error({"number": "sip:a@b", "flow": "survey"}, 503)
    assert len(sip.placed) == 1


def test_api_without_sip_is_503(store: Store) -> None:
    client, sue, _ = client_for(store, None)
    resp = client.post("/api/calls/outbound", json={"number": "sip:a@b", "flow": "x"}, headers=sue)
    assert resp.status_code == 503 and "no outbound calls" in resp.get_json()["error"]


def test_a_number_goes_through_the_registrar_and_the_call_comes_from_the_registered_user(store: Store) -> None:
    sip = FakeSip()
    config = SipConfig(registration=RegistrationConfig("sip:pbx.example.com:5060", "ivr-line", "secret"))
    outbound = OutboundCalls(sip, config, lambda: ["survey"], store)
    placed = outbound.place("+15550100", "survey")
    assert placed.uri == "sip:+15550100@pbx.example.com:5060"
    assert sip.placed[0][2:4] == ("ivr-line", "+15550100")


@pytest.mark.parametrize("result", ["no_answer", "busy", "failed"])
def test_an_unanswered_call_is_recorded_with_its_outcome(store: Store, result: str) -> None:
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    placed = outbound.place("sip:amy@127.0.0.1:5090", "survey")
    sip.results[placed.call_id](placed.call_id, result)
    assert waiting.wait_for(lambda: (store.get_call(placed.call_id) or {}).get("outcome") == result, 5)
    call = store.get_call(placed.call_id)
    assert call is not None and call["ended_at"]
    assert [e["kind"] for e in call["events"]] == ["outbound", "outbound_result"]
    assert outbound.take(placed.call_id) is None


def test_an_answered_call_is_left_to_its_session(store: Store) -> None:
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    placed = outbound.place("sip:amy@127.0.0.1:5090", "survey", {"name": "Amy"})
    sip.results[placed.call_id](placed.call_id, "answered")
    taken = outbound.take(placed.call_id)
    assert taken is not None and taken.flow == "survey" and taken.variables == {"name": "Amy"}


def test_sip_statuses_map_to_outbound_results() -> None:
    assert outbound_result(486) == "busy" and outbound_result(603) == "busy"
    assert outbound_result(480) == "no_answer" and outbound_result(487) == "no_answer"
    assert outbound_result(404) == "failed" and outbound_result(503) == "failed"
