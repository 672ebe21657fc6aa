"""The OpenAPI 3.1 description of the REST API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from ivr import __version__


def _op(summary: str, role: str, *, params: list[dict[str, Any]] | None = None, body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the {role} role (or higher).",
        "security": [{"bearer": []}, {"session": []}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "401": {"description": "Not signed in / no valid token"},
            "403": {"description": "Role too low"},
        },
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def _q(name: str, kind: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    """The API description as a JSON-able dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ivr console API",
            "version": __version__,
            "description": "Calls, transcripts, queues, agents and figures. Collected values are shown in full to "
            "the people handling a call (cards: last 4 digits; secrets masked). "
            "Create a token with `ivr users token NAME` and send `Authorization: Bearer <token>`. "
            "Browser sessions must send X-CSRF-Token on POST/PUT.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            }
        },
        "paths": {
            "/api/calls": {
                "get": _op(
                    "Search call records, newest first",
                    "supervisor",
                    params=[
                        _q("q", "string", "text in id, numbers, intent or transcript"),
                        _q("since", "number", "UNIX seconds"),
                        _q("until", "number", "UNIX seconds"),
                        _q("agent", "string", "agent name"),
                        _q("outcome", "string", "call outcome"),
                        _q("limit", "integer", "1 to 200 (default 50)"),
                        _q("offset", "integer", "skip this many"),
                    ],
                )
            },
            "/api/calls/{call_id}": {
                "get": _op(
                    "One call: context, transcript with timestamps, events, notes, queue entries",
                    "agent",
                    params=[_p("call_id")],
                )
            },
            "/api/context/{call_id}/{expires}/{sig}": {
                "get": {
                    "summary": "A call's full context for the agent's CRM (the X-IVR-Context-Url link)",
                    "description": "No login: the link's HMAC signature (server key) and expiry are the "
                    "permission. Card numbers show their last 4 digits, secrets are masked.",
                    "parameters": [_p("call_id"), _p("expires"), _p("sig")],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                                  "403": {"description": "Link not valid or expired"}},
                }
            },
            "/api/calls/{call_id}/notes": {
                "post": _op("Add a disposition note {text, disposition}", "agent", params=[_p("call_id")], body=True)
            },
            "/api/queues": {"get": _op("Live queues: waiting and connected callers, agent states", "agent")},
            "/api/agents": {"get": _op("Agent states", "agent")},
            "/api/agents/{name}/current": {
                "get": _op(
                    "The screen pop of the call ringing on or connected to an agent", "agent", params=[_p("name")]
                )
            },
            "/api/agents/{name}/state": {
                "put": _op(
                    "Set an agent available, on break (with reason) or offline {state, reason}",
                    "agent",
                    params=[_p("name")],
                    body=True,
                )
            },
            "/api/callbacks": {
                "post": _op(
                    "Queue a callback {number: SIP URI or phone number, queue, context?}: 201 {call_id, queue, "
                    "number, state}; 400 says what to fix",
                    "supervisor",
                    body=True,
                )
            },
            "/api/calls/outbound": {
                "post": _op(
                    "Call a number and run a flow on the call (a survey, a notification) {number: SIP URI or "
                    "phone number, flow, variables?, retries? (0-5, default 0), retry_after? (seconds, 2-3600, "
                    "default 60)}: 201 {call_id, number, flow, state, retries, retry_after}; the flow's "
                    "variables get variables plus outbound: true; an unanswered try is tried again retries "
                    "times; the call's record (GET /api/calls/{call_id}) ends no_answer, busy or failed when "
                    "no try was answered; 400 says what to fix (unknown flow: names the flows), 429 when the "
                    "number had its outbound calls for today, 503 (with Retry-After) when the node is at its "
                    "call capacity or no SIP runs",
                    "supervisor",
                    body=True,
                )
            },
            "/api/calls/outbound/{call_id}": {
                "get": _op(
                    "An outbound call's state (ringing, waiting_retry, answered, over), its tries "
                    "[{attempt, at, result}], next_attempt_at while waiting to try again, and result (the "
                    "call's outcome once over); 404 for no such outbound call",
                    "supervisor",
                    params=[_p("call_id")],
                )
            },
            "/api/figures": {
                "get": _op(
                    "Figures of a day and the trend of the days before it",
                    "supervisor",
                    params=[
                        _q("day", "string", "YYYY-MM-DD, default today"),
                        _q("days", "integer", "trend length (1-90)"),
                    ],
                )
            },
            "/healthz": {
                "get": {"summary": "Liveness and database check", "responses": {"200": {"description": "OK"}}}
            },
        },
    }
