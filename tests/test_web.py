"""The console and REST API through Flask's test client, over a real SQLite store and a real ACD."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from ivr.queue import Acd, parse_queues
from ivr.store import Store, open_store
from ivr.testing.fakes import FakeClock, FakeConnector
from ivr.web import add_user, create_app, new_token
from ivr.web.webhook import CrmWebhook

QUEUES = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
  ben: {uri: "sip:ben@127.0.0.1"}
queues:
  support: {ring_timeout: 30, wrap_up: 0}
"""
CARD = "4242 4242 4242 4242"  # a Luhn-valid test card


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.store: Store = open_store(tmp_path / "ivr.db")
        self.connector = FakeConnector()
        self.clock = FakeClock(time.time())
        self.acd = Acd(parse_queues(QUEUES), self.connector, self.store, self.clock)
        self.app: Flask = create_app(self.store, self.acd, {"secret_key": "test", "live_poll_interval": 0.05})
        for name, role in (("ann", "agent"), ("ben", "agent"), ("sue", "supervisor"), ("adm", "admin")):
            # a cheap hash keeps the tests fast; add_user (scrypt) is what production uses
            self.store.add_user(name, generate_password_hash(f"{name}-password", "pbkdf2:sha256:1000"), role, 0.0)

    def client(self, user: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if user:
            token = csrf_of(client.get("/login"))
            resp = client.post("/login", data={"name": user, "password": f"{user}-password", "csrf_token": token})
            assert resp.status_code == 302, resp.data
        return client

    def call(self, call_id: str, said: str, intent: str = "billing", **ctx: Any) -> None:
        now = time.time()
        self.store.start_call(call_id, "+15550100", "100", "support", now - 30)
        self.store.add_turn(call_id, now - 20, "bot", "How can I help?")
        self.store.add_turn(call_id, now - 10, "caller", said, intent=intent, confidence=0.83)
        self.store.set_context(call_id, {"intent": intent, "confidence": 0.83, "slots": {"account": "12345678"}, **ctx})


def csrf_of(resp: Any) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', resp.get_data(as_text=True))
    assert match, "page has no CSRF token"
    return match.group(1)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_no_caller_data_without_signing_in(env: Env) -> None:
    env.call("c1", "hello")
    anon = env.client()
    for page in ("/agent", "/agent/panel", "/supervisor", "/supervisor/live", "/calls", "/calls/c1", "/events"):
        resp = anon.get(page)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], page
    for api in ("/api/calls", "/api/calls/c1", "/api/queues", "/api/agents", "/api/figures", "/api/agents/ann/current"):
        resp = anon.get(api)
        assert resp.status_code == 401 and "authentication required" in resp.get_json()["error"], api
    assert anon.get("/api/calls/c1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/healthz").get_json()["status"] == "ok"
    spec = anon.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/api/calls/{call_id}" in spec["paths"]


def test_login_wrong_password_and_missing_csrf(env: Env) -> None:
    client = env.client()
    token = csrf_of(client.get("/login"))
    resp = client.post("/login", data={"name": "ann", "password": "nope-nope", "csrf_token": token})
    assert resp.status_code == 401 and "Wrong name or password" in resp.get_data(as_text=True)
    resp = client.post("/login", data={"name": "ann", "password": "ann-password"})
    assert resp.status_code == 400  # no CSRF token
    assert client.get("/agent").status_code == 302


def test_forms_need_the_csrf_token(env: Env) -> None:
    ann = env.client("ann")
    assert ann.post("/agent/state", data={"state": "available"}).status_code == 400
    assert env.acd.snapshot()["agents"]["ann"]["state"] == "offline"
    token = csrf_of(ann.get("/agent"))
    assert ann.post("/agent/state", data={"state": "available", "csrf_token": "x" + token}).status_code == 400
    assert ann.post("/agent/state", data={"state": "available", "csrf_token": token}).status_code == 302
    assert env.acd.snapshot()["agents"]["ann"]["state"] == "available"
    # the JSON API with a session cookie also needs the header; with a bearer token it does not
    assert ann.put("/api/agents/ann/state", json={"state": "offline"}).status_code == 400
    resp = ann.put(
        "/api/agents/ann/state", json={"state": "break", "reason": "coffee"}, headers={"X-CSRF-Token": token}
    )
    assert resp.status_code == 200 and resp.get_json()["reason"] == "coffee"
    bearer = {"Authorization": f"Bearer {new_token(env.store, 'ann')}"}
    resp = env.app.test_client().put("/api/agents/ann/state", json={"state": "available"}, headers=bearer)
    assert resp.get_json()["state"] == "available"
    assert (
        env.app.test_client().put("/api/agents/ben/state", json={"state": "available"}, headers=bearer).status_code
        == 403
    )


def test_transcripts_are_escaped_and_card_numbers_masked(env: Env) -> None:
    env.call("c1", f"<script>alert('x')</script> my card is {CARD}")
    sue = env.client("sue")
    html = sue.get("/calls/c1").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert(" in html
    assert "**** **** **** 4242" in html and CARD not in html
    assert "12345678" in html  # collected values in full for the people handling the call (a supervisor)
    data = sue.get("/api/calls/c1").get_json()
    said = data["turns"][1]["text"]
    assert said.endswith("**** **** **** 4242") and "<script>" in said  # JSON is data: escaping is the page's job
    assert data["context"]["slots"]["account"] == "12345678" and data["caller"] == "+15550100"
    listing = sue.get("/calls?q=card").get_data(as_text=True)
    assert 'href="/calls/c1"' in listing


def test_roles(env: Env) -> None:
    env.call("c1", "hi")
    ann = env.client("ann")
    assert ann.get("/supervisor").status_code == 403
    assert ann.get("/admin/users").status_code == 403
    assert ann.get("/api/calls").status_code == 403
    assert ann.get("/api/calls/c1").status_code == 404  # not offered to ann
    assert ann.get("/calls/c1").status_code == 404
    assert env.client("sue").get("/admin/users").status_code == 403
    adm = env.client("adm")
    token = csrf_of(adm.get("/admin/users"))
    adm.post("/admin/users", data={"name": "zed", "password": "zed-password", "role": "agent", "csrf_token": token})
    assert "zed" in adm.get("/admin/users").get_data(as_text=True)
    add_user(env.store, "amy", "amy-password", "agent")
    assert env.store.get_user("amy")["password_hash"].startswith("scrypt:")  # type: ignore[index]
    assert env.client("amy").get("/agent").status_code == 200


def test_screen_pop_when_offered_and_while_on_the_call(env: Env) -> None:
    env.call("c1", "I was charged twice", intent="billing_dispute", vip="yes")
    ann = env.client("ann")
    token = csrf_of(ann.get("/agent"))
    ann.post("/agent/state", data={"state": "available", "csrf_token": token})
    assert "No call right now" in ann.get("/agent/panel").get_data(as_text=True)
    env.acd.enqueue("c1", "support", priority=5, context={"caller": "+15550100"})
    panel = ann.get("/agent/panel").get_data(as_text=True)
    assert "Incoming call" in panel and "billing_dispute" in panel and "I was charged twice" in panel
    assert "12345678" in panel  # the agent offered the call sees what the caller gave, in full
    pop = ann.get("/api/agents/ann/current").get_json()["call"]
    assert pop["intent"] == "billing_dispute" and pop["priority"] == 5 and pop["confidence"] == 0.83
    assert [t["speaker"] for t in pop["turns"]] == ["bot", "caller"]
    assert ann.get("/api/calls/c1").status_code == 200  # offered to ann: now visible to her
    assert env.client("ben").get("/api/agents/ann/current").status_code == 403
    env.connector.answer("ann")
    assert "On call" in ann.get("/agent/panel").get_data(as_text=True)
    ann.post("/agent/note", data={"call_id": "c1", "disposition": "resolved", "text": "refund <b>ok</b>",
                                  "csrf_token": token})  # fmt: skip
    env.acd.call_finished("c1")
    page = ann.get("/agent").get_data(as_text=True)
    assert "No call right now" in page and 'href="/calls/c1"' in page  # own history
    detail = ann.get("/calls/c1").get_data(as_text=True)
    assert "refund &lt;b&gt;ok&lt;/b&gt;" in detail


def test_supervisor_live_queue_view(env: Env) -> None:
    env.call("c1", "hi")
    env.call("c2", "hello")
    env.acd.set_agent_state("ben", "break", "team meeting")
    env.acd.enqueue("c1", "support")
    env.acd.enqueue("c2", "support", priority=9)
    sue = env.client("sue")
    view = sue.get("/api/queues").get_json()
    assert [c["call_id"] for c in view["queues"]["support"]["waiting"]] == ["c2", "c1"]
    agents = {a["name"]: a for a in view["agents"]}
    assert agents["ben"]["state"] == "break" and agents["ben"]["reason"] == "team meeting"
    html = sue.get("/supervisor").get_data(as_text=True)
    assert "team meeting" in html and "2 waiting" in html and "<svg" in html
    env.acd.abandon("c2")
    assert "1 waiting" in sue.get("/supervisor/live").get_data(as_text=True)


def test_supervisor_sets_agent_states_from_the_live_view(env: Env) -> None:
    sue, ann = env.client("sue"), env.client("ann")
    token = csrf_of(sue.get("/supervisor"))
    assert 'action="/supervisor/agents/ann/state"' in sue.get("/supervisor/live").get_data(as_text=True)
    assert sue.post("/supervisor/agents/ann/state", data={"state": "available"}).status_code == 400  # no CSRF
    resp = sue.post("/supervisor/agents/ann/state", data={"state": "available", "csrf_token": token})
    assert resp.status_code == 302 and env.acd.snapshot()["agents"]["ann"]["state"] == "available"
    fetched = {"X-Requested-With": "fetch"}
    resp = sue.post("/supervisor/agents/ann/state", data={"state": "break", "csrf_token": token}, headers=fetched)
    assert resp.status_code == 200 and "set by sue" in resp.get_data(as_text=True)  # the refreshed live view
    assert env.acd.snapshot()["agents"]["ann"]["reason"] == "set by sue"
    resp = sue.post("/supervisor/agents/zed/state", data={"state": "break", "csrf_token": token}, headers=fetched)
    assert resp.status_code == 400 and "zed" in resp.get_data(as_text=True)
    resp = sue.post("/supervisor/agents/ann/state", data={"state": "lunch", "csrf_token": token}, headers=fetched)
    assert resp.status_code == 400 and env.acd.snapshot()["agents"]["ann"]["state"] == "break"
    ann_token = csrf_of(ann.get("/agent"))  # agents change their own state on their desk, not others'
    resp = ann.post("/supervisor/agents/ben/state", data={"state": "available", "csrf_token": ann_token})
    assert resp.status_code == 403
    assert env.acd.snapshot()["agents"]["ben"]["state"] == "offline"


def test_todays_figures(env: Env) -> None:
    now = time.time()
    store = env.store
    for i, (intent, outcome) in enumerate([("faq", "completed"), ("faq", "completed"), ("billing", "transferred"),
                                           ("billing", "transferred"), ("billing", "transferred")]):  # fmt: skip
        store.start_call(f"f{i}", "+1555", "100", "support", now - 600 + i)
        store.set_context(f"f{i}", {"intent": intent, "slots": {"satisfaction": 4 + i % 2}})
        store.end_call(f"f{i}", now - 300 + i, outcome)
    waits = {"f2": 5.0, "f3": 40.0}
    for call_id in ("f2", "f3", "f4"):
        entry = store.add_queue_entry(call_id, "support", 0, now - 500, {})
        if call_id in waits:
            store.update_queue_entry(entry, state="completed", answered_at=now - 500 + waits[call_id], agent="ann")
        else:
            store.update_queue_entry(entry, state="abandoned", ended_at=now - 480, outcome="abandoned")
    data = env.client("sue").get("/api/figures").get_json()["today"]
    assert data["calls"] == 5 and data["containment"] == pytest.approx(2 / 5)
    assert data["transfer_rate_by_intent"]["billing"]["rate"] == 1.0
    assert data["transfer_rate_by_intent"]["faq"]["rate"] == 0.0
    assert data["abandonment"] == pytest.approx(1 / 3)
    assert data["wait_average"] == pytest.approx(22.5) and data["wait_p90"] == pytest.approx(40.0)
    assert data["service_level"] == pytest.approx(1 / 3)  # 1 of 2 answered + 1 abandoned within 20 s
    assert data["satisfaction_average"] == pytest.approx(4.4)
    assert "40%" in env.client("sue").get("/supervisor/figures").get_data(as_text=True)


def test_live_events_stream_announces_changes(env: Env) -> None:
    sue = env.client("sue")
    resp = sue.get("/events", buffered=False)
    assert resp.mimetype == "text/event-stream"
    chunks = iter(resp.response)
    assert next(chunks).startswith(b"retry:")
    env.acd.set_agent_state("ann", "available")
    event = next(chunks).decode()
    assert event.startswith("event: change") and '"agent": "ann"' in event
    resp.close()


class _Crm(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    failures = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Crm.failures > 0:
            _Crm.failures -= 1
            self.send_response(503)
        else:
            _Crm.bodies.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Crm.bodies, _Crm.failures = [], 1
    yield f"http://127.0.0.1:{server.server_address[1]}/crm"
    server.shutdown()


def test_crm_webhook_retries_and_never_blocks(env: Env, crm: str) -> None:
    env.call("c1", f"card {CARD}")
    hook = CrmWebhook(env.store, crm, backoff=0.05)
    env.acd.subscribe(hook.on_acd_event)
    started = time.perf_counter()
    env.acd.enqueue("c1", "support")
    assert time.perf_counter() - started < 0.2
    deadline = time.monotonic() + 10
    while not _Crm.bodies and time.monotonic() < deadline:
        time.sleep(0.02)
    hook.close()
    assert hook.delivered == 1 and len(_Crm.bodies) == 1
    body = _Crm.bodies[0]
    assert body["call_id"] == "c1" and body["queue"] == "support" and body["intent"] == "billing"
    assert "**** **** **** 4242" in body["transcript"][1]["text"] and CARD not in json.dumps(body)


def test_shipped_openapi_yaml_matches_the_served_description(env: Env) -> None:
    from ruamel.yaml import YAML

    shipped = YAML(typ="safe").load(Path(__file__).resolve().parents[1].joinpath("docs", "openapi.yaml"))
    assert shipped == env.app.test_client().get("/api/openapi.json").get_json(), "regenerate docs/openapi.yaml"


def test_recordings_are_heard_only_by_the_people_allowed_to_see_the_call(env: Env, tmp_path: Path) -> None:
    from ivr.audio.wavfile import write_wav

    env.call("c1", "I'd like to leave a message")
    message = tmp_path / "rec" / "c1-1.wav"
    write_wav(message, bytes(3200), 8000, private=True)
    env.store.add_event("c1", time.time(), "recording", {"path": str(message), "duration": 0.2})
    env.acd.set_agent_state("ann", "available")
    env.acd.enqueue("c1", "support")
    env.connector.answer("ann")
    ann, ben, sue = env.client("ann"), env.client("ben"), env.client("sue")
    assert "/calls/c1/recordings/0" in ann.get("/calls/c1").get_data(as_text=True)
    for allowed in (ann, sue):
        resp = allowed.get("/calls/c1/recordings/0")
        assert resp.status_code == 200 and resp.mimetype == "audio/wav" and resp.data[:4] == b"RIFF"
        assert resp.headers["Cache-Control"] == "no-store"
    assert ben.get("/calls/c1/recordings/0").status_code == 404  # not their call
    assert ann.get("/calls/c1/recordings/1").status_code == 404
    assert env.client().get("/calls/c1/recordings/0").status_code == 302  # sign in first


def test_crm_webhook_sends_masked_values_and_a_link_to_the_full_context(env: Env, crm: str) -> None:
    _Crm.failures = 0
    app = create_app(env.store, env.acd, {"secret_key": "test", "crm_webhook_url": crm,
                                          "public_url": "https://ivr.test"})
    env.call("c1", "my account is 12345678")
    env.acd.enqueue("c1", "support")
    deadline = time.monotonic() + 10
    while not _Crm.bodies and time.monotonic() < deadline:
        time.sleep(0.02)
    app.extensions["ivr.webhook"].close()
    [body] = _Crm.bodies
    assert body["context"]["slots"]["account"] == "****5678" and "12345678" not in json.dumps(body)
    link = body["context_url"]
    assert link.startswith("https://ivr.test/api/context/c1/")
    full = app.test_client().get(link.removeprefix("https://ivr.test")).get_json()
    assert full["context"]["slots"]["account"] == "12345678"
    assert full["transcript"][1]["text"] == "my account is 12345678"


def _sealed_message(env: Env, tmp_path: Path, call_id: str, kind: str, queue: str = "") -> int:
    """A sealed recording of 0.5 s of a tone, stored for ``call_id``; returns its id."""
    import numpy as np

    from ivr.store.sealed_audio import AudioVault

    writer = AudioVault(tmp_path / "rec", env.store.sealer).new_file(call_id, kind, 8000)
    writer.write((np.sin(np.arange(4000) * 0.3) * 5000).astype("<i2").tobytes())
    writer.close()
    return env.store.add_recording(call_id, time.time(), kind, str(writer.path), writer.duration, queue)


def test_a_sealed_call_recording_plays_decrypted_for_the_agent_who_took_it_and_supervisors(
        env: Env, tmp_path: Path) -> None:
    env.call("c1", "hello")
    _sealed_message(env, tmp_path, "c1", "call", "support")
    env.acd.set_agent_state("ann", "available")
    env.acd.enqueue("c1", "support")
    env.connector.answer("ann")
    ann, ben, sue = env.client("ann"), env.client("ben"), env.client("sue")
    assert 'src="/calls/c1/recordings/0"' in ann.get("/calls/c1").get_data(as_text=True)
    for allowed in (ann, sue):
        resp = allowed.get("/calls/c1/recordings/0")
        assert resp.status_code == 200 and resp.mimetype == "audio/wav" and resp.data[:4] == b"RIFF"
        assert resp.headers["Cache-Control"] == "no-store" and len(resp.data) == 44 + 8000
    assert ben.get("/calls/c1/recordings/0").status_code == 404  # not their call
    assert env.client().get("/calls/c1/recordings/0").status_code == 302  # sign in first


def test_voicemail_inbox_lists_plays_and_tracks_call_backs_for_the_queues_people(env: Env, tmp_path: Path) -> None:
    env.call("c1", "call me back")
    env.call("c2", "billing question")
    env.store.start_call("c1", "+15550100123", "", "hotline", time.time())
    support = _sealed_message(env, tmp_path, "c1", "voicemail", "support")
    billing = _sealed_message(env, tmp_path, "c2", "voicemail", "billing")  # a mailbox no agent takes calls for
    queues = QUEUES.replace("support: {ring_timeout: 30, wrap_up: 0}",
                            "support: {agents: [ann]}\n  sales: {agents: [ben]}")
    env.app.extensions["ivr.acd"] = Acd(parse_queues(queues), env.connector, env.store, env.clock)
    ann, ben, sue = env.client("ann"), env.client("ben"), env.client("sue")
    page = ann.get("/voicemail").get_data(as_text=True)
    assert f'id="voicemail-{support}"' in page and f'id="voicemail-{billing}"' not in page
    assert "*******0123" in page and "+15550100123" not in page  # agents see numbers masked
    assert "+15550100123" in sue.get("/voicemail").get_data(as_text=True)
    assert f'id="voicemail-{billing}"' in sue.get("/voicemail").get_data(as_text=True)
    assert "No voicemail." in ben.get("/voicemail").get_data(as_text=True)
    resp = ann.get(f"/voicemail/{support}/audio")
    assert resp.status_code == 200 and resp.mimetype == "audio/wav" and resp.headers["Cache-Control"] == "no-store"
    assert ben.get(f"/voicemail/{support}/audio").status_code == 404
    assert ann.get(f"/voicemail/{billing}/audio").status_code == 404
    assert env.client().get(f"/voicemail/{support}/audio").status_code == 302

    token = csrf_of(ann.get("/voicemail"))
    assert ann.post(f"/voicemail/{support}", data={"called_back": "1"}).status_code == 400  # no CSRF token
    assert ann.post(f"/voicemail/{support}", data={"called_back": "1", "csrf_token": token}).status_code == 302
    assert ann.post(f"/voicemail/{support}", data={"notes": "<b>left a message</b>",
                                                   "csrf_token": token}).status_code == 302
    mail = env.store.get_recording(support)
    assert mail is not None and mail["called_back_by"] == "ann" and mail["called_back_at"]
    assert mail["notes"] == "<b>left a message</b>"
    page = ann.get("/voicemail").get_data(as_text=True)
    assert "&lt;b&gt;left a message&lt;/b&gt;" in page and "<b>left" not in page
    assert "Not called back" in page and f'id="voicemail-{support}"' not in ann.get("/voicemail?open=1").get_data(
        as_text=True)
    assert ben.post(f"/voicemail/{support}", data={"called_back": "0",
                                                   "csrf_token": csrf_of(ben.get("/voicemail"))}).status_code == 404
    ann.post(f"/voicemail/{support}", data={"called_back": "0", "csrf_token": token})
    assert env.store.get_recording(support)["called_back_at"] is None  # type: ignore[index]
    with env.store.engine.connect() as conn:  # notes are sealed at rest
        raw = conn.exec_driver_sql("select notes from recordings where id = ?", (support,)).scalar()
    assert "left a message" not in raw
