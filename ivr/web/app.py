"""The Flask application: agent and supervisor console, REST API, live events, health check."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flask import Flask, Response, current_app, jsonify, request, stream_with_context
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from ivr.handoff import context_url
from ivr.queue import Acd, AcdConfig
from ivr.reports import ReportOptions
from ivr.reports.export import cell as report_cell
from ivr.store import Store, mask_sensitive
from ivr.web import api, pages
from ivr.web.auth import check_csrf, csrf_token, current_user, login_required
from ivr.web.live import LiveBroker
from ivr.web.params import CallIdConverter
from ivr.web.throttle import Throttle, ThrottleConfig
from ivr.web.webhook import CrmWebhook

log = logging.getLogger(__name__)


@dataclass
class WebConfig:
    """Console settings. ``secret_key`` signs sessions: set it (or IVR_SECRET_KEY) so logins survive restarts."""

    secret_key: str | None = None
    service_level_seconds: float | None = None  # default: queues.yaml's service_level_seconds, else 20
    trend_days: int = 14
    short_abandon_seconds: float = 5.0  # callers who hang up sooner are not counted abandoned (docs/reports.md)
    fcr_days: float = 7.0  # a repeat call within this many days means the first was not resolved
    crm_webhook_url: str | None = None
    crm_webhook_headers: Mapping[str, str] = field(default_factory=dict)
    queues: AcdConfig | None = None  # queue names and agents when no ACD runs in this process
    live_poll_interval: float = 1.0
    secure_cookies: bool = False  # True behind HTTPS
    session_hours: float = 12.0  # a sign-in lasts at most this long
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)  # failed sign-ins and tokens
    public_url: str | None = None
    """Where a CRM reaches this console (``http://ivr.example.com:8080``): the base of the signed context
    links (``X-IVR-Context-Url``, the webhook's ``context_url``); None: no links."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> WebConfig:
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _format_time(value: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(value).strftime(fmt) if value else ""


def _format_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _format_secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def create_app(store: Store, acd: Acd | None = None, config: WebConfig | Mapping[str, Any] | None = None) -> Flask:
    """The console app over ``store``; pass the process's ``acd`` for live queues and agent state changes."""
    settings = config if isinstance(config, WebConfig) else WebConfig.from_mapping(config or {})
    queue_config = acd.config if acd is not None else settings.queues
    if settings.service_level_seconds is None:
        settings.service_level_seconds = queue_config.service_level_seconds if queue_config else 20.0
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key or os.environ.get("IVR_SECRET_KEY") or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        # __Host-: the browser keeps it only if Secure, for this host alone and path / (no subdomain can set it)
        SESSION_COOKIE_NAME="__Host-ivr_session" if settings.secure_cookies else "session",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=1_000_000,
    )
    app.extensions["ivr.store"] = store
    app.extensions["ivr.acd"] = acd
    app.extensions["ivr.config"] = settings
    app.extensions["ivr.report_options"] = ReportOptions.from_queues(
        queue_config, service_level_seconds=settings.service_level_seconds,
        short_abandon_seconds=settings.short_abandon_seconds, fcr_days=settings.fcr_days)
    app.extensions["ivr.throttle"] = Throttle(store, settings.throttle)
    broker = LiveBroker(store, acd, poll_interval=settings.live_poll_interval)
    app.extensions["ivr.live"] = broker
    key = app.config["SECRET_KEY"]

    def link(call_id: str) -> str:
        # read at each call: ``ivr serve`` learns its port (and so the default public URL) after this
        return context_url(settings.public_url, key, call_id) if settings.public_url else ""

    app.extensions["ivr.context_url"] = link
    if settings.crm_webhook_url:
        webhook = CrmWebhook(store, settings.crm_webhook_url, headers=settings.crm_webhook_headers,
                             context_url=link)
        app.extensions["ivr.webhook"] = webhook
        if acd is not None:
            acd.subscribe(webhook.on_acd_event)

    app.url_map.converters["call_id"] = CallIdConverter
    app.url_map.merge_slashes = False  # a Call-ID may hold "//"
    app.before_request(check_csrf)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.jinja_env.filters.update(time=_format_time, pct=_format_pct, secs=_format_secs, mask=mask_sensitive)
    app.jinja_env.globals.update(cell=report_cell)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"current_user": current_user(), "csrf_token": csrf_token}

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'",
        )
        if settings.secure_cookies:
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if current_user() is not None:
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            resp = exc.get_response()
            resp.set_data(jsonify(error=exc.description).get_data())
            resp.mimetype = "application/json"
            return resp
        return exc

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            store.count_calls()
        except Exception as exc:  # report, don't crash: this is what monitoring asks
            log.warning("health check: database not reachable: %s", exc)
            return jsonify(status="error", database=False), 503
        return jsonify(status="ok", database=True, acd=acd is not None, live_clients=broker.client_count())

    @app.get("/events")
    @login_required("agent")
    def events() -> Response:
        live: LiveBroker = current_app.extensions["ivr.live"]
        resp = Response(stream_with_context(live.stream()), mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    app.jinja_env.globals["Markup"] = Markup
    return app
