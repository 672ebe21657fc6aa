"""Logins, roles, API tokens and CSRF protection for the console.

Pages use a signed session cookie (HttpOnly, SameSite=Lax, Secure behind HTTPS) and a per-session CSRF token
on every form and state-changing fetch. A session names the user's session version: signing out or a new
password moves the version on, which ends every session of that user at once (a copied cookie included);
sessions also end after ``session_hours``. The REST API also accepts ``Authorization: Bearer <token>``;
tokens are stored hashed and guessing them is throttled per source address.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from ivr.errors import IvrError
from ivr.store import Store
from ivr.web.throttle import Throttle

log = logging.getLogger(__name__)
ROLES = ("agent", "supervisor", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
F = TypeVar("F", bound=Callable[..., Any])


class AuthError(IvrError):
    """A user could not be created or authenticated."""


@dataclass(frozen=True)
class User:
    """The signed-in user."""

    name: str
    role: str

    def at_least(self, role: str) -> bool:
        """True if this user's role is ``role`` or higher (agent < supervisor < admin)."""
        return _RANK[self.role] >= _RANK[role]


def add_user(store: Store, name: str, password: str, role: str) -> None:
    """Create (or reset) a console user with a hashed password."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise AuthError("user names are 1-64 letters, digits, '.', '-' or '_' (use the agent's name from queues.yaml)")
    if len(password) < 8:
        raise AuthError("the password must have at least 8 characters")
    store.add_user(name, generate_password_hash(password), role, time.time())


def check_login(store: Store, name: str, password: str) -> User | None:
    """The user if the password is right, else None (same work either way)."""
    record = store.get_user(name)
    if record is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(record["password_hash"], password):
        return None
    return User(record["name"], record["role"])


_DUMMY_HASH = generate_password_hash("not-a-real-password")


def token_hash(token: str) -> str:
    """How an API token is stored (SHA-256: tokens are long random strings, no need for a slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(store: Store, user: str, label: str = "") -> str:
    """Create an API token for ``user``; the token itself is shown once and only its hash is kept."""
    if store.get_user(user) is None:
        raise AuthError(f"no user {user!r}; create it first with: ivr users add {user} --role agent")
    token = "ivr_" + secrets.token_urlsafe(32)
    store.add_token(token_hash(token), user, label, time.time())
    return token


def current_user() -> User | None:
    """The user of this request (session cookie or bearer token), cached on ``g``."""
    if "user" in g:
        return cast(User | None, g.user)
    user: User | None = None
    header = request.headers.get("Authorization", "")
    store: Store = current_app.extensions["ivr.store"]
    if header.lower().startswith("bearer "):
        user = _token_user(store, header[7:].strip())
    elif "user" in session:
        record = store.get_user(session["user"])
        hours = current_app.extensions["ivr.config"].session_hours
        if (
            record is not None  # a deleted user loses access at once
            and session.get("version") == record["session_version"]
            and time.time() - float(session.get("since", 0)) < hours * 3600
        ):
            user = User(record["name"], record["role"])
    g.user = user
    return user


def _token_user(store: Store, token: str) -> User | None:
    throttle: Throttle = current_app.extensions["ivr.throttle"]
    source = request.remote_addr or "?"
    keys = throttle.token_keys(source)
    g.retry_after = throttle.retry_after(keys)
    if g.retry_after:
        log.warning("API token refused from %s: too many wrong tokens, locked for %d s", source, g.retry_after)
        return None
    record = store.user_for_token(token_hash(token))
    if record is None:
        throttle.failed(keys)
        log.warning("wrong API token from %s", source)
        return None
    g.token_auth = True
    return User(record["name"], record["role"])


def start_session(name: str) -> None:
    """Sign ``name`` in on this browser: a fresh session bound to the user's current session version."""
    record = current_app.extensions["ivr.store"].get_user(name)
    session.clear()
    session.update(user=name, version=record["session_version"] if record else -1, since=time.time())
    g.pop("user", None)
    csrf_token()


def end_sessions() -> None:
    """Sign the current user out everywhere (every copy of the session cookie stops working)."""
    user = current_user()
    if user is not None:
        current_app.extensions["ivr.store"].end_sessions(user.name)
        log.info("%s signed out", user.name)
    session.clear()


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def check_csrf() -> None:
    """Reject a state-changing request from a browser session without the right CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return  # token clients are not browsers: no ambient credentials to abuse
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        if request.path.startswith("/api/"):
            resp = jsonify(error="missing or wrong CSRF token; reload the page")
            resp.status_code = 400
            abort(resp)
        abort(400, "missing or wrong CSRF token; reload the page and try again")


def login_required(role: str = "agent") -> Callable[[F], F]:
    """Page decorator: redirect to the login page, or 403 when the role is too low."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("console.login", next=request.full_path))
            if not user.at_least(role):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, inner)

    return wrap


def api_auth(role: str = "agent") -> Callable[[F], F]:
    """API decorator: 401 JSON without credentials, 403 when the role is too low."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None and g.get("retry_after"):
                resp = jsonify(error=f"too many wrong tokens from your address; try again in {g.retry_after} s")
                resp.status_code = 429
                resp.headers["Retry-After"] = str(g.retry_after)
                return resp
            if user is None:
                resp = jsonify(error="authentication required: sign in or send Authorization: Bearer <token>")
                resp.status_code = 401
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
            if not user.at_least(role):
                return jsonify(error=f"this needs the {role} role"), 403
            return view(*args, **kwargs)

        return cast(F, inner)

    return wrap
