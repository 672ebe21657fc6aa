"""Logins, roles, API tokens and CSRF protection for the console.

Pages use a signed session cookie (HttpOnly, SameSite=Lax) and a per-session CSRF token on every form and
state-changing fetch. The REST API also accepts ``Authorization: Bearer <token>``; tokens are stored hashed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from ivr.errors import IvrError
from ivr.store import Store

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
        record = store.user_for_token(token_hash(header[7:].strip()))
        if record is not None:
            user = User(record["name"], record["role"])
            g.token_auth = True
    elif "user" in session:
        record = store.get_user(session["user"])
        if record is not None:  # a deleted user loses access at once
            user = User(record["name"], record["role"])
    g.user = user
    return user


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
