"""The console over real HTTP on its production server (cheroot): headers, cookies, the access log."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from ivr.store import open_store
from ivr.web import create_app
from ivr.web.serving import WebServer, mask_request_target


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    store = open_store(tmp_path / "ivr.db")
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    secure = getattr(request, "param", False)
    server = WebServer(create_app(store, None, {"secret_key": "k", "secure_cookies": secure}), "127.0.0.1", 0)
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


def _sign_in(base: str) -> tuple[requests.Session, requests.Response]:
    s = requests.Session()
    token = re.search(r'name="csrf-token" content="([^"]+)"', s.get(base + "/login").text)
    assert token
    resp = s.post(base + "/login", data={"name": "sue", "password": "sue-password", "csrf_token": token.group(1)},
                  allow_redirects=False)  # fmt: skip
    return s, resp


def test_production_server_names_no_version(served: str) -> None:
    resp = requests.get(served + "/healthz", timeout=5)
    assert resp.status_code == 200 and resp.headers["Server"] == "ivr"
    assert "Werkzeug" not in str(resp.headers) and "Python" not in str(resp.headers)
    _, login = _sign_in(served)
    cookie = login.headers["Set-Cookie"]
    assert login.status_code == 302 and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


@pytest.mark.parametrize("served", [True], indirect=True)
def test_secure_cookies(served: str) -> None:
    login = requests.get(served + "/login", timeout=5)  # the form's CSRF token starts a session
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith("__Host-ivr_session=") and "Secure" in cookie and "Path=/" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "max-age" in login.headers["Strict-Transport-Security"]


def test_access_log_masks_digits(served: str, caplog: pytest.LogCaptureFixture) -> None:
    session, _ = _sign_in(served)
    with caplog.at_level(logging.INFO, logger="ivr.web.access"):
        session.get(served + "/calls", params={"q": "4111 1111 1111 1234"})
        session.get(served + "/calls?q=%2B1%20555%20010%200&page=1")
        session.get(served + "/calls?q=%0Afake%20line")
    lines = [r.getMessage() for r in caplog.records if r.name == "ivr.web.access"]
    assert any('"GET /calls?q=**** **** **** ****" 200' in line for line in lines), lines
    assert any("q=+* *** *** *&page=1" in line for line in lines), lines
    targets = [line.split('"')[1] for line in lines]
    assert not any(re.search(r"\d{3}", target) for target in targets), targets
    assert "GET /calls?q=?fake line" in targets


def test_mask_request_target() -> None:
    assert mask_request_target("/calls?q=4111-1111-1111-1234") == "/calls?q=****-****-****-****"
    assert mask_request_target("/calls?q=%34%31%31%31%31") == "/calls?q=*****"  # encoded digits too
    assert mask_request_target("/calls/c1?page=12") == "/calls/c1?page=12"
    assert mask_request_target("/x?q=a%0D%0Ab") == "/x?q=a??b"


def test_cli_flags_are_offered() -> None:
    from ivr.cli.serve import serve
    from ivr.web.cli import console

    assert "--secure-cookies" in CliRunner().invoke(serve, ["--help"]).output
    assert "--secure-cookies" in CliRunner().invoke(console, ["--help"]).output


def test_shutdown_ends_open_live_streams_promptly(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    store.add_user("sue", generate_password_hash("sue-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    app = create_app(store, None, {"secret_key": "k", "live_poll_interval": 0.1})
    server = WebServer(app, "127.0.0.1", 0, on_stop=app.extensions["ivr.live"].close)
    server.start()
    session, _ = _sign_in(f"http://127.0.0.1:{server.port}")
    stream = session.get(f"http://127.0.0.1:{server.port}/events", stream=True, timeout=5)
    assert next(stream.iter_content(5)) == b"retry"
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 3
    stream.close()


def test_oversized_headers_are_refused(served: str) -> None:
    resp = requests.get(served + "/healthz", headers={"X-Padding": "a" * 100_000}, timeout=5)
    assert resp.status_code in (400, 413, 431)
    assert requests.get(served + "/healthz", timeout=5).status_code == 200
