"""The console and API under hostile input: redirects, bad parameters, search patterns, odd Call-IDs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from test_web import Env, csrf_of
from werkzeug.test import TestResponse

from ivr.queue import Acd, parse_queues
from ivr.testing.fakes import FakeClock, FakeConnector
from ivr.web import add_user, create_app, new_token


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _login(env: Env, name: str, password: str, next_url: str) -> str:
    client = env.app.test_client()
    token = csrf_of(client.get("/login"))
    resp = client.post(f"/login?next={next_url}", data={"name": name, "password": password, "csrf_token": token})
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


@pytest.mark.parametrize("next_url", ["/%09/evil.example", "/%0A/evil.example", "/%0D%0A/x", "%0A", "/%5C/evil",
                                      "//evil.example", "https://evil.example/", "/%00"])  # fmt: skip
def test_sign_in_never_redirects_off_site(env: Env, next_url: str) -> None:
    assert _login(env, "sue", "sue-password", next_url) == "/supervisor"


def test_sign_in_returns_to_the_page_asked_for(env: Env) -> None:
    assert _login(env, "sue", "sue-password", "/calls%3Fq%3Dhello") == "/calls?q=hello"


@pytest.mark.parametrize("url,message", [
    ("/supervisor/figures?day=99999-01-01", "day must be a date"),
    ("/supervisor/figures?day=9999-12-31", "day must be a date"),
    ("/calls?page=1e20", "page must be a whole number"),
    ("/calls?page=99999999999999999999", "page must be a whole number"),
    ("/api/figures?day=0001-01-01&days=5", "day must be a date"),
    ("/api/figures?days=1000", "days must be a whole number from 1 to 90"),
    ("/api/calls?limit=99999999999999999999999", "limit must be a whole number from 1 to 200"),
    ("/api/calls?offset=99999999999999999999", "offset must be a whole number"),
    ("/api/calls?since=nan", "since must be a number"),
    ("/api/calls?until=1e400", "until must be a number"),
])  # fmt: skip
def test_bad_parameters_get_a_400_that_says_why(env: Env, url: str, message: str) -> None:
    resp = env.client("sue").get(url)
    assert resp.status_code == 400
    body = resp.get_json()["error"] if url.startswith("/api/") else resp.get_data(as_text=True)
    assert message in body


def test_a_past_day_of_figures_can_be_shown(env: Env) -> None:
    resp = env.client("sue").get("/api/figures?day=2026-01-31&days=3")
    assert resp.status_code == 200
    assert [d["day"] for d in resp.get_json()["trend"]] == ["2026-01-29", "2026-01-30", "2026-01-31"]
    assert env.client("sue").get("/supervisor/figures?day=2026-01-31").status_code == 200
    assert len(env.client("sue").get("/api/figures?day=1971-01-01&days=90").get_json()["trend"]) == 90


def test_search_wildcards_match_themselves(env: Env) -> None:
    env.call("c1", "my discount is 50% off")
    env.call("c2", "fifty off")
    env.call("c3", "order_number please")
    env.call("c4", "order number please")
    sue = env.client("sue")
    assert [c["id"] for c in sue.get("/api/calls?q=%25").get_json()["calls"]] == ["c1"]
    assert [c["id"] for c in sue.get("/api/calls?q=order_number").get_json()["calls"]] == ["c3"]
    assert sue.get("/api/calls?q=\\").get_json()["calls"] == []


def test_call_ids_with_slashes_are_viewable(env: Env) -> None:
    odd = "/a3f9//x@10.0.0.1/udp?x=1#y"
    env.call(odd, "hello there")
    sue = env.client("sue")
    listing = sue.get("/calls").get_data(as_text=True)
    href = listing.split('href="/calls/', 1)[1].split('"', 1)[0]
    page = sue.get("/calls/" + href)
    assert page.status_code == 200 and "hello there" in page.get_data(as_text=True)
    assert sue.get("/api/calls/" + href).get_json()["id"] == odd
    token = csrf_of(sue.get("/supervisor"))
    resp = sue.post(f"/api/calls/{href}/notes", json={"text": "ok"}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 201 and env.store.get_call(odd)["notes"][0]["text"] == "ok"  # type: ignore[index]


def test_unknown_api_paths_answer_json(env: Env) -> None:
    resp = env.client("sue").get("/api/nothing-here")
    assert resp.status_code == 404 and "error" in resp.get_json()



def test_agents_see_only_their_own_queues_and_themselves(env: Env) -> None:
    # ann takes calls of support only; ben of support and vip
    env.acd = Acd(parse_queues(QUEUES_TWO), FakeConnector(), env.store, FakeClock(time.time()))
    env.app = create_app(env.store, env.acd, {"secret_key": "test"})
    env.call("c1", "hi")
    env.call("c2", "hello")
    env.acd.enqueue("c1", "support")
    env.acd.enqueue("c2", "vip")
    ann, sue = env.client("ann"), env.client("sue")
    view = ann.get("/api/queues").get_json()
    assert list(view["queues"]) == ["support"]
    caller = view["queues"]["support"]["waiting"][0]["caller"]
    assert caller == "+****0100" and [a["name"] for a in view["agents"]] == ["ann"]
    assert [a["name"] for a in ann.get("/api/agents").get_json()["agents"]] == ["ann"]
    everything = sue.get("/api/queues").get_json()
    assert set(everything["queues"]) == {"support", "vip"} and len(everything["agents"]) == 2
    assert everything["queues"]["vip"]["waiting"][0]["caller"] == "+15550100"
    assert {a["name"] for a in sue.get("/api/agents").get_json()["agents"]} == {"ann", "ben"}


QUEUES_TWO = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
  ben: {uri: "sip:ben@127.0.0.1"}
queues:
  support: {ring_timeout: 30, wrap_up: 0}
  vip: {ring_timeout: 30, wrap_up: 0, agents: [ben]}
"""


def _sign_in(client: FlaskClient, name: str, password: str, source: str = "127.0.0.1") -> TestResponse:
    token = csrf_of(client.get("/login"))
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": source})  # fmt: skip


def test_password_guessing_locks_the_account_then_the_source(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    client = env.app.test_client()
    for _ in range(5):
        assert _sign_in(client, "ann", "guess-guess").status_code == 401
    locked = _sign_in(client, "ann", "ann-password")  # the right password, but too late
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.get_data(as_text=True)
    assert 800 < int(locked.headers["Retry-After"]) <= 900
    assert "failed sign-in as 'ann' from 127.0.0.1" in caplog.text and "refused" in caplog.text
    assert _sign_in(env.app.test_client(), "ben", "ben-password").status_code == 302  # others still sign in
    # one address trying many accounts is stopped too
    for i in range(20):
        assert _sign_in(client, f"user{i}", "guess-guess", "192.0.2.9").status_code == 401
    assert _sign_in(client, "sue", "sue-password", "192.0.2.9").status_code == 429
    assert _sign_in(client, "sue", "sue-password", "192.0.2.10").status_code == 302


def test_lockout_is_stored_and_ends_after_the_window(env: Env) -> None:
    from ivr.web.throttle import Throttle

    throttle = Throttle(env.store)  # another process sharing the database sees the same failures
    keys = throttle.login_keys("ann", "192.0.2.1")
    for i in range(5):
        throttle.failed(keys, now=1000.0 + i)
    assert throttle.retry_after(keys, now=1010.0) == 890
    assert Throttle(env.store).retry_after(keys, now=1899.0) == 1
    assert Throttle(env.store).retry_after(keys, now=1901.0) == 0


def test_token_guessing_gets_429_with_retry_after(env: Env) -> None:
    good = {"Authorization": f"Bearer {new_token(env.store, 'sue')}"}
    client = env.app.test_client()
    for i in range(20):
        assert client.get("/api/queues", headers={"Authorization": f"Bearer guess{i}"}).status_code == 401
    resp = client.get("/api/queues", headers=good)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0 and "try again" in resp.get_json()["error"]
    other = client.get("/api/queues", headers=good, environ_base={"REMOTE_ADDR": "192.0.2.5"})
    assert other.status_code == 200


def test_a_copied_session_cookie_stops_working_at_sign_out(env: Env) -> None:
    ann = env.client("ann")
    cookie = ann.get_cookie("session")
    assert cookie is not None
    thief = env.app.test_client()
    thief.set_cookie("session", cookie.value)
    assert thief.get("/agent").status_code == 200
    token = csrf_of(ann.get("/agent"))
    assert ann.post("/logout", data={"csrf_token": token}).status_code == 302
    assert thief.get("/agent").status_code == 302 and thief.get("/api/agents").status_code == 401


def test_a_new_password_ends_existing_sessions(env: Env) -> None:
    ann = env.client("ann")
    assert ann.get("/agent").status_code == 200
    add_user(env.store, "ann", "new-password-1", "agent")
    assert ann.get("/agent").status_code == 302


def test_sessions_expire(env: Env) -> None:
    ann = env.client("ann")
    env.app.extensions["ivr.config"].session_hours = 0.0
    assert ann.get("/agent").status_code == 302


@pytest.mark.parametrize("body", [[1], "text", 5])
def test_api_bodies_must_be_json_objects(env: Env, body: object) -> None:
    env.call("c1", "hi")
    sue = env.client("sue")
    headers = {"X-CSRF-Token": csrf_of(sue.get("/supervisor"))}
    for resp in (sue.put("/api/agents/ann/state", json=body, headers=headers),
                 sue.post("/api/calls/c1/notes", json=body, headers=headers)):  # fmt: skip
        assert resp.status_code == 400 and resp.get_json()["error"] == "send a JSON object"
