"""Outbound calls for CRMs (``POST /api/calls/outbound``): validation, the record of an unanswered call, and
the result of a SIP status. The real-SIP calls are in tests/test_queue_sip.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ivr.outbound import OutboundCalls, OutboundRefused
from ivr.sip.admission import Admission, IncomingCall
from ivr.sip.config import RegistrationConfig, SipConfig
from ivr.sip.server import outbound_result
from ivr.store import Store, open_store
from ivr.testing import waiting


class FakeSip:
    """Records the outbound calls asked for; ``results`` answers them later. Its admission is a real one of
    ``max_calls`` calls."""

    def __init__(self, running: bool = True, max_calls: int = 4) -> None:
        self.running = running
        self.admission = Admission(SipConfig(max_calls=max_calls))
        self.placed: list[tuple[str, str, str, str, float]] = []
        self.results: dict[str, Callable[[str, str], None]] = {}
        self.fail = False

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None:
        if self.fail:
            raise OSError("the SIP worker's pipe is closed")
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
    assert [e["kind"] for e in call["events"]] == ["outbound", "outbound_attempt", "outbound_result"]
    assert call["events"][1]["data"] == {"attempt": 1, "result": result, "next_attempt_at": None}
    assert outbound.take(placed.call_id) is None
    assert sip.admission.active_calls == 0


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


# ------------------------------------------------------------------------------------ admission tickets


def test_an_outbound_call_holds_a_ticket_of_the_inbound_capacity_until_it_is_over(store: Store) -> None:
    sip = FakeSip(max_calls=2)
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    client, sue, _ = client_for(store, outbound)
    body = {"number": "sip:amy@127.0.0.1:5090", "flow": "survey"}
    first = outbound.place("sip:amy@127.0.0.1:5090", "survey")
    inbound = sip.admission.admit(IncomingCall("in-1", "bob", "100", "127.0.0.1:5062"))
    assert inbound.admitted and sip.admission.active_calls == 2
    resp = client.post("/api/calls/outbound", json=body, headers=sue)  # full: refused, with what to do
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert "at its call capacity (max_calls): try again in a moment" in resp.get_json()["error"]
    assert sip.admission.admit(IncomingCall("in-2", "carol", "100", "127.0.0.1:5064")).code == 503
    assert len(sip.placed) == 1

    sip.results[first.call_id](first.call_id, "answered")  # answered: still counted while the flow runs
    assert outbound.take(first.call_id) is not None
    time.sleep(0.2)
    assert sip.admission.active_calls == 2
    sip.results[first.call_id](first.call_id, "ended")
    assert waiting.wait_for(lambda: sip.admission.active_calls == 1, 5)
    assert client.post("/api/calls/outbound", json=body, headers=sue).status_code == 201


@pytest.mark.parametrize("ending", ["no_answer", "busy", "failed", "lost_worker", "cannot_place", "answered_ended"])
def test_every_way_an_outbound_call_ends_gives_its_ticket_back(store: Store, ending: str) -> None:
    sip = FakeSip(max_calls=1)
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    sip.fail = ending == "cannot_place"
    placed = outbound.place("sip:amy@127.0.0.1:5090", "survey")
    if ending in ("lost_worker", "answered_ended"):  # answered, then the call's end (or its worker's)
        sip.results[placed.call_id](placed.call_id, "answered")
        sip.results[placed.call_id](placed.call_id, "failed" if ending == "lost_worker" else "ended")
    elif ending != "cannot_place":
        sip.results[placed.call_id](placed.call_id, ending)
    assert waiting.wait_for(lambda: sip.admission.active_calls == 0, 5)
    if ending == "cannot_place":
        assert waiting.wait_for(lambda: (store.get_call(placed.call_id) or {}).get("outcome") == "failed", 5)
    sip.fail = False
    assert outbound.place("sip:bob@127.0.0.1:5090", "survey").call_id  # the slot is free again


def test_a_stopping_server_refuses_outbound_calls(store: Store) -> None:
    sip = FakeSip()
    sip.admission.stopping = True
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    with pytest.raises(OutboundRefused, match="stopping: place the call on another node") as refused:
        outbound.place("sip:amy@127.0.0.1:5090", "survey")
    assert refused.value.status == 503 and store.list_calls() == []


# ---------------------------------------------------------------------------------------------- retries


def test_an_unanswered_call_is_tried_again_and_the_api_shows_its_tries(store: Store) -> None:
    sip = FakeSip(max_calls=1)
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    client, sue, ann = client_for(store, outbound)
    resp = client.post("/api/calls/outbound", headers=sue, json={
        "number": "sip:amy@127.0.0.1:5090", "flow": "survey", "retries": 2, "retry_after": 2})
    assert resp.status_code == 201 and resp.get_json()["retries"] == 2
    call_id = resp.get_json()["call_id"]
    sip.results[call_id](call_id, "busy")
    assert waiting.wait_for(lambda: client.get(f"/api/calls/outbound/{call_id}", headers=sue)
                            .get_json()["state"] == "waiting_retry", 5)
    status = client.get(f"/api/calls/outbound/{call_id}", headers=sue).get_json()
    assert [a["result"] for a in status["attempts"]] == ["busy"] and status["next_attempt_at"] > time.time()
    assert sip.admission.active_calls == 0  # no ticket while waiting for the next try
    assert outbound.take(call_id) is None
    assert waiting.wait_for(lambda: len(sip.placed) == 2, 5)  # about 2 s later, the same call id
    assert sip.placed[1][0] == call_id and sip.admission.active_calls == 1
    sip.results[call_id](call_id, "answered")
    assert outbound.take(call_id) is not None
    assert waiting.wait_for(lambda: client.get(f"/api/calls/outbound/{call_id}", headers=sue)
                            .get_json()["state"] == "answered", 5)
    status = client.get(f"/api/calls/outbound/{call_id}", headers=sue).get_json()
    assert [a["result"] for a in status["attempts"]] == ["busy", "answered"] and status["result"] is None
    sip.results[call_id](call_id, "ended")
    assert waiting.wait_for(lambda: sip.admission.active_calls == 0, 5)
    assert client.get(f"/api/calls/outbound/{call_id}", headers=ann).status_code == 403
    assert client.get("/api/calls/outbound/outbound-nope", headers=sue).status_code == 404


def test_a_call_nobody_answers_after_its_retries_ends_with_the_last_result(store: Store) -> None:
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    placed = outbound.place("sip:amy@127.0.0.1:5090", "survey", retries=1, retry_after=2)
    sip.results[placed.call_id](placed.call_id, "busy")
    assert waiting.wait_for(lambda: len(sip.placed) == 2, 5)
    sip.results[placed.call_id](placed.call_id, "no_answer")
    assert waiting.wait_for(lambda: (store.get_call(placed.call_id) or {}).get("outcome") == "no_answer", 5)
    status = outbound.status(placed.call_id)
    assert status is not None and status["state"] == "over" and status["result"] == "no_answer"
    assert [a["result"] for a in status["attempts"]] == ["busy", "no_answer"] and status["retries"] == 1
    call = store.get_call(placed.call_id)
    assert call is not None and call["events"][-1]["data"] == {"result": "no_answer", "attempts": 2}
    time.sleep(2.5)
    assert len(sip.placed) == 2  # no third try


def test_closing_gives_up_calls_waiting_for_their_next_try(store: Store) -> None:
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store)
    placed = outbound.place("sip:amy@127.0.0.1:5090", "survey", retries=3, retry_after=60)
    sip.results[placed.call_id](placed.call_id, "busy")
    assert waiting.wait_for(lambda: (outbound.status(placed.call_id) or {}).get("state") == "waiting_retry", 5)
    outbound.close()
    call = store.get_call(placed.call_id)
    assert call is not None and call["outcome"] == "busy" and len(sip.placed) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("retries", -1, "retries must be a whole number from 0 to 5"),
    ("retries", 6, "retries must be a whole number from 0 to 5"),
    ("retries", "2", "retries must be a whole number from 0 to 5"),
    ("retries", True, "retries must be a whole number from 0 to 5"),
    ("retry_after", 1, "retry_after must be a number of seconds from 2 to 3600"),
    ("retry_after", 7200, "retry_after must be a number of seconds from 2 to 3600"),
    ("retry_after", "soon", "retry_after must be a number of seconds from 2 to 3600"),
])
def test_retry_settings_out_of_range_are_a_400_saying_what_fits(store: Store, field: str, value: Any,
                                                                message: str) -> None:
    sip = FakeSip()
    client, sue, _ = client_for(store, OutboundCalls(sip, SipConfig(), lambda: ["survey"], store))
    resp = client.post("/api/calls/outbound", headers=sue,
                       json={"number": "sip:amy@127.0.0.1:5090", "flow": "survey", field: value})
    assert resp.status_code == 400 and message in resp.get_json()["error"]
    assert sip.placed == [] and sip.admission.active_calls == 0


def test_a_number_gets_its_daily_outbound_calls_and_then_a_429(store: Store) -> None:
    now = [1_800_000_000.0]
    sip = FakeSip()
    outbound = OutboundCalls(sip, SipConfig(), lambda: ["survey"], store, clock=lambda: now[0],
                             max_per_number_per_day=2)
    client, sue, _ = client_for(store, outbound)
    body = {"number": "sip:amy@127.0.0.1:5090", "flow": "survey"}
    assert [client.post("/api/calls/outbound", json=body, headers=sue).status_code for _ in range(2)] == [201, 201]
    resp = client.post("/api/calls/outbound", json=body, headers=sue)
    assert resp.status_code == 429
    assert "has had its 2 outbound calls for today; try again tomorrow" in resp.get_json()["error"]
    assert client.post("/api/calls/outbound", json={**body, "number": "sip:bob@127.0.0.1:5090"},
                       headers=sue).status_code == 201
    now[0] += 86400
    assert client.post("/api/calls/outbound", json=body, headers=sue).status_code == 201


def test_the_daily_count_survives_a_restart_through_the_call_records(store: Store) -> None:
    first = OutboundCalls(FakeSip(), SipConfig(), lambda: ["survey"], store, max_per_number_per_day=2)
    for _ in range(2):
        first.place("sip:amy@127.0.0.1:5090", "survey")
    store.start_call("in-1", "sip:amy@127.0.0.1:5090", "100", "survey", time.time())  # incoming: not counted
    restarted = OutboundCalls(FakeSip(), SipConfig(), lambda: ["survey"], None, max_per_number_per_day=2)
    restarted.attach_store(store)
    with pytest.raises(OutboundRefused, match="has had its 2 outbound calls for today") as refused:
        restarted.place("sip:amy@127.0.0.1:5090", "survey")
    assert refused.value.status == 429
    assert restarted.place("sip:bob@127.0.0.1:5090", "survey").call_id
