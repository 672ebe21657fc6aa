"""REST API (JSON): calls, queues, agents, figures. Bearer token or console session (+ CSRF header)."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ivr.errors import IvrError
from ivr.handoff import check_context_signature
from ivr.queue import Acd
from ivr.store import Store
from ivr.web import figures as fig
from ivr.web.auth import api_auth, current_user
from ivr.web.data import can_see_call, queue_view, screen_pop, shown_call, view_for
from ivr.web.openapi import openapi_document
from ivr.web.params import day_arg, float_arg, int_arg, json_object
from ivr.web.webhook import call_payload

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_LIMIT = 200


def _store() -> Store:
    return current_app.extensions["ivr.store"]


def _acd() -> Acd | None:
    return current_app.extensions["ivr.acd"]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _queue_config() -> Any:
    acd = _acd()
    return acd.config if acd is not None else current_app.extensions["ivr.config"].queues


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.get("/calls")
@api_auth("supervisor")
def list_calls() -> Any:
    args = request.args
    search = (args.get("q") or "")[:200] or None
    limit, offset = int_arg("limit", 50, 1, MAX_LIMIT), int_arg("offset", 0, 0, 10**9)
    rows = _store().list_calls(
        since=float_arg("since"), until=float_arg("until"), search=search, agent=args.get("agent"),
        outcome=args.get("outcome"), limit=limit, offset=offset,
    )  # fmt: skip
    return jsonify(calls=[shown_call(r) for r in rows])


@bp.get("/calls/<call_id:call_id>")
@api_auth("agent")
def get_call(call_id: str) -> Any:
    user = current_user()
    assert user is not None
    call = _store().get_call(call_id)
    if call is None or not can_see_call(user, call):
        return _error(404, f"no call {call_id!r} visible to you")
    return jsonify(shown_call(call))


@bp.get("/context/<call_id>/<expires>/<sig>")
def signed_context(call_id: str, expires: str, sig: str) -> Any:
    """The full context of a call for the agent's CRM, through the signed, expiring link the agent's phone
    got as ``X-IVR-Context-Url`` (no login: the signature is the permission)."""
    key = current_app.config["SECRET_KEY"]
    if not check_context_signature(key, call_id, expires, sig):
        return _error(403, "this context link is not valid or has expired")
    payload = call_payload(_store(), call_id, handling=True)
    if payload is None:
        return _error(404, f"no call {call_id!r}")
    resp = jsonify(payload)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/calls/<call_id:call_id>/notes")
@api_auth("agent")
def add_note(call_id: str) -> Any:
    user = current_user()
    assert user is not None
    call = _store().get_call(call_id)
    if call is None or not can_see_call(user, call):
        return _error(404, f"no call {call_id!r} visible to you")
    body = json_object()
    text = str(body.get("text", "")).strip()[:4000]
    if not text and not body.get("disposition"):
        return _error(400, "send JSON with text and/or disposition")
    _store().add_note(call_id, user.name, time.time(), text, str(body.get("disposition", ""))[:64])
    return jsonify(ok=True), 201


@bp.get("/queues")
@api_auth("agent")
def queues() -> Any:
    user = current_user()
    assert user is not None
    config = _queue_config()
    return jsonify(view_for(user, queue_view(_store(), config), config))


@bp.get("/agents")
@api_auth("agent")
def agents() -> Any:
    user = current_user()
    assert user is not None
    config = _queue_config()
    return jsonify(agents=view_for(user, queue_view(_store(), config), config)["agents"])


@bp.get("/agents/<name>/current")
@api_auth("agent")
def agent_current(name: str) -> Any:
    user = current_user()
    assert user is not None
    if user.name != name and not user.at_least("supervisor"):
        return _error(403, "agents can only see their own screen pop")
    return jsonify(call=screen_pop(_store(), name))


@bp.route("/agents/<name>/state", methods=["PUT", "POST"])
@api_auth("agent")
def agent_state(name: str) -> Any:
    user = current_user()
    assert user is not None
    if user.name != name and not user.at_least("supervisor"):
        return _error(403, "agents can only change their own state")
    acd = _acd()
    if acd is None:
        return _error(503, "agent states can only be changed where the queues run (ivr serve)")
    body = json_object()
    try:
        acd.set_agent_state(name, str(body.get("state", "")), str(body.get("reason", ""))[:200])
    except IvrError as exc:
        return _error(400, str(exc))
    return jsonify(next(a for a in queue_view(_store(), acd.config)["agents"] if a["name"] == name))


_NUMBER = re.compile(r"^(sips?:[^\s<>\"]+@[^\s<>\"]+|tel:\+?[0-9*#]{2,32}|\+?[0-9*#]{2,32})$")


@bp.post("/callbacks")
@api_auth("supervisor")
def add_callback() -> Any:
    """Queue a callback for a number (a CRM's "call me back"): it waits its turn like a caller who chose one."""
    acd = _acd()
    if acd is None:
        return _error(503, "callbacks can only be queued where the queues run (ivr serve)")
    body = json_object()
    number, queue, context = body.get("number"), body.get("queue"), body.get("context", {})
    if not isinstance(number, str) or not _NUMBER.match(number.strip()):
        return _error(400, "number must be a SIP URI (sip:user@host) or a phone number such as +15550100")
    if not isinstance(queue, str) or not acd.has_queue(queue):
        return _error(400, f"queue must be one of: {', '.join(acd.config.queues)}")
    if not isinstance(context, dict) or len(json.dumps(context, default=str)) > 8000:
        return _error(400, "context must be a JSON object of at most 8000 characters (it goes to the agent)")
    if acd.config.queues[queue].callback is None:
        return _error(400, f"queue {queue!r} takes no callbacks; add callback: to it in the queue configuration")
    if getattr(acd, "dialer", None) is None:
        return _error(503, "this server places no callbacks (it runs no SIP dialer)")
    call_id = f"callback-{secrets.token_hex(8)}"
    try:
        acd.add_callback(call_id, queue, number.strip(), context)
    except IvrError as exc:
        return _error(400, str(exc))
    return jsonify(call_id=call_id, queue=queue, number=number.strip(), state="callback"), 201


@bp.post("/calls/outbound")
@api_auth("supervisor")
def outbound_call() -> Any:
    """Call a number and run a flow on the call (a CRM's survey or notification): 201 {call_id, ...}.
    Optional ``retries`` (0-5) and ``retry_after`` (seconds) try an unanswered call again."""
    from ivr.outbound import OutboundRefused

    outbound = current_app.extensions.get("ivr.outbound")
    if outbound is None:
        return _error(503, "this server places no outbound calls (no SIP runs here: ivr serve does)")
    body = json_object()
    number = body.get("number")
    if isinstance(number, str) and not _NUMBER.match(number.strip()):
        return _error(400, "number must be a SIP URI (sip:user@host) or a phone number such as +15550100")
    try:
        placed = outbound.place(number, body.get("flow"), body.get("variables"), body.get("retries"),
                                body.get("retry_after"))
    except OutboundRefused as exc:
        resp, status = _error(exc.status, str(exc))
        if exc.retry_after is not None:
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp, status
    return jsonify(call_id=placed.call_id, number=placed.number, flow=placed.flow, state="calling",
                   retries=placed.retry.retries, retry_after=placed.retry.retry_after), 201


@bp.get("/calls/outbound/<call_id:call_id>")
@api_auth("supervisor")
def outbound_status(call_id: str) -> Any:
    """An outbound call's state (ringing, waiting_retry, answered, over), its tries and final result."""
    outbound = current_app.extensions.get("ivr.outbound")
    status = outbound.status(call_id) if outbound is not None else None
    if status is None:
        return _error(404, f"no outbound call {call_id!r}")
    return jsonify(status)


@bp.get("/figures")
@api_auth("supervisor")
def figures() -> Any:
    day, days = day_arg("day"), int_arg("days", 1, 1, 90)
    options = current_app.extensions["ivr.report_options"]
    trend = fig.daily_trend(_store(), days, day, options=options)
    today = {"day": day.isoformat(), **fig.figures(_store(), *fig.day_bounds(day), options=options)}
    return jsonify(today=today, trend=trend)
