"""Console pages: login, agent desk, supervisor views, call records, users (HTML, escaped by Jinja)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from werkzeug.wrappers import Response

from ivr.errors import IvrError
from ivr.queue import Acd
from ivr.reports import ReportOptions, build_report, daily_trend, drill
from ivr.reports.export import table_csv
from ivr.reports.report import TABLES as REPORT_TABLES
from ivr.store import Store
from ivr.web import figures as fig
from ivr.web.audio import audio_response
from ivr.web.auth import ROLES, add_user, check_login, current_user, end_sessions, login_required, start_session
from ivr.web.data import (
    can_see_call,
    queue_view,
    recording_paths,
    screen_pop,
    shown_call,
    shown_voicemail,
    voicemail_queues,
)
from ivr.web.drilldown import calls_csv, cell_url, figure_charts, tile_url
from ivr.web.params import call_filter_args, day_range_args, int_arg, safe_next
from ivr.web.throttle import Throttle

bp = Blueprint("console", __name__)
log = logging.getLogger(__name__)


def _store() -> Store:
    return current_app.extensions["ivr.store"]


def _acd() -> Acd | None:
    return current_app.extensions["ivr.acd"]


def _settings() -> Any:
    return current_app.extensions["ivr.config"]


@bp.route("/")
def index() -> Response:
    user = current_user()
    if user is None:
        return redirect(url_for("console.login"))
    return redirect(url_for("console.supervisor" if user.at_least("supervisor") else "console.agent"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", error="")
    name, source = request.form.get("name", "")[:128], request.remote_addr or "?"
    throttle: Throttle = current_app.extensions["ivr.throttle"]
    keys = throttle.login_keys(name, source)
    wait = throttle.retry_after(keys)
    if wait:
        log.warning("sign-in as %r from %s refused: too many failures, locked for %d s", name, source, wait)
        error = f"Too many failed sign-ins. Try again in {math.ceil(wait / 60)} minute(s)."
        return render_template("login.html", error=error), 429, {"Retry-After": str(wait)}
    user = check_login(_store(), name, request.form.get("password", ""))
    if user is None:
        throttle.failed(keys)
        log.warning("failed sign-in as %r from %s", name, source)
        return render_template("login.html", error="Wrong name or password."), 401
    throttle.succeeded(keys[0][0])
    log.info("%s signed in from %s", user.name, source)
    start_session(user.name)
    default = url_for("console.supervisor" if user.at_least("supervisor") else "console.agent")
    return redirect(safe_next(request.args.get("next")) or default)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    end_sessions()
    return redirect(url_for("console.login"))


@bp.route("/agent")
@login_required("agent")
def agent() -> str:
    user = current_user()
    assert user is not None
    acd = _acd()
    return render_template(
        "agent.html",
        is_agent=acd is not None and user.name in acd.agent_names(),
        history=_store().agent_history(user.name, limit=20),
        **_agent_panel_args(user.name),
    )


def _agent_panel_args(name: str) -> dict[str, Any]:
    view = queue_view(_store(), _queue_config())
    me = next((a for a in view["agents"] if a["name"] == name), None)
    return {"me": me, "pop": screen_pop(_store(), name)}


def _queue_config() -> Any:
    acd = _acd()
    return acd.config if acd is not None else _settings().queues


@bp.route("/agent/panel")
@login_required("agent")
def agent_panel() -> str:
    user = current_user()
    assert user is not None
    return render_template("_agent_panel.html", **_agent_panel_args(user.name))


def _set_agent_state(name: str, state: str, reason: str) -> str:
    """Apply an agent state change on the ACD; returns why it was refused ('' when done)."""
    acd = _acd()
    if acd is None:
        abort(503, "agent states can only be changed where the queues run (ivr serve)")
    try:
        acd.set_agent_state(name, state, reason)
    except IvrError as exc:
        return str(exc)
    return ""


@bp.route("/agent/state", methods=["POST"])
@login_required("agent")
def agent_state() -> Any:
    user = current_user()
    assert user is not None
    error = _set_agent_state(user.name, request.form.get("state", ""), request.form.get("reason", "")[:200])
    if error:
        flash(error)
    if request.headers.get("X-Requested-With") == "fetch":
        return render_template("_agent_panel.html", **_agent_panel_args(user.name))
    return redirect(url_for("console.agent"))


@bp.route("/agent/note", methods=["POST"])
@login_required("agent")
def agent_note() -> Any:
    user = current_user()
    assert user is not None
    call = _store().get_call(request.form.get("call_id", ""))
    if call is None or not can_see_call(user, call):
        abort(404)
    text = request.form.get("text", "").strip()[:4000]
    if text or request.form.get("disposition"):
        _store().add_note(call["id"], user.name, time.time(), text, request.form.get("disposition", "")[:64])
    if request.headers.get("X-Requested-With") == "fetch":
        return render_template("_agent_panel.html", **_agent_panel_args(user.name))
    return redirect(url_for("console.agent"))


@bp.route("/supervisor")
@login_required("supervisor")
def supervisor() -> str:
    return render_template("supervisor.html", **_live_args(), **_figures_args())


def _live_args() -> dict[str, Any]:
    return {"view": queue_view(_store(), _queue_config())}


def _report_options() -> ReportOptions:
    return current_app.extensions["ivr.report_options"]


def _range() -> tuple[dt.date, dt.date, float, float]:
    first, last = day_range_args()
    return first, last, fig.day_bounds(first)[0], fig.day_bounds(last)[1]


PAGE_TABLES = ("queues", "agents", "flows")


def _figures_args() -> dict[str, Any]:
    first, last, since, until = _range()
    options = _report_options()
    store = _store()
    report = build_report(store, since, until, options, tables=("summary", "hours", *PAGE_TABLES))
    figures = report.summary
    trend_first = first if last > first else last - dt.timedelta(days=_settings().trend_days - 1)
    trend = daily_trend(store, trend_first, last, options)
    charts = figure_charts(report.table("hours").rows, trend, first, last)
    range_args = {"since": first.isoformat(), "until": last.isoformat()}
    return {"figures": figures, "charts": charts, "tables": [report.table(n) for n in PAGE_TABLES],
            "range": range_args, "single_day": first == last, "today": first == last == dt.date.today(),
            "csv_tables": REPORT_TABLES, "tile_url": lambda tile: tile_url(range_args, tile),
            "cell_url": lambda table, row, column: cell_url(range_args, table, row, column)}  # fmt: skip


@bp.route("/supervisor/report.csv")
@login_required("supervisor")
def supervisor_report_csv() -> Response:
    """One table of the supervisor's figures for a day range as CSV (cells safe to open in a spreadsheet)."""
    table = request.args.get("table", "summary")
    if table not in REPORT_TABLES:
        abort(400, f"table must be one of {', '.join(REPORT_TABLES)}")
    first, last, since, until = _range()
    report = build_report(_store(), since, until, _report_options(), tables=(table,))
    name = f"ivr-{table}-{first.isoformat()}" + ("" if first == last else f"-to-{last.isoformat()}")
    return Response(table_csv(report.table(table)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})  # fmt: skip


@bp.route("/supervisor/live")
@login_required("supervisor")
def supervisor_live() -> str:
    return render_template("_live.html", **_live_args())


@bp.route("/supervisor/agents/<name>/state", methods=["POST"])
@login_required("supervisor")
def supervisor_agent_state(name: str) -> Any:
    """A supervisor logs an agent in or out, or puts them on a break (the reason names the supervisor)."""
    user = current_user()
    assert user is not None
    state = request.form.get("state", "")
    error = _set_agent_state(name, state, f"set by {user.name}" if state == "break" else "")
    fetched = request.headers.get("X-Requested-With") == "fetch"
    if error and fetched:
        return Response(error, status=400, mimetype="text/plain")
    if error:
        flash(error)
    if fetched:
        return render_template("_live.html", **_live_args())
    return redirect(url_for("console.supervisor"))


@bp.route("/supervisor/figures")
@login_required("supervisor")
def supervisor_figures() -> str:
    return render_template("_figures.html", **_figures_args())


COUNT_CAP = 10_000
"""Call records count matches up to this many (a search of a million calls stops there)."""


@bp.route("/calls")
@login_required("agent")
def calls() -> str:
    """Call records, newest first: supervisors every call, agents the calls offered to or taken by them;
    narrowed by words (``q``), days (``since``, ``until``) and the filters of a figure (see
    :func:`ivr.web.drilldown.calls_url`), 50 a page, with how many match."""
    user = current_user()
    assert user is not None
    q, where, shown = _listing_args()
    page = int_arg("page", 0, 0, 10_000_000)
    store = _store()
    rows = store.list_calls(search=q or None, where=where, limit=50, offset=page * 50)
    total = store.count_listed_calls(search=q or None, where=where, cap=COUNT_CAP)
    return render_template("calls.html", calls=rows, q=q, page=page, total=total, filters=shown,
                           figures=drill.FIGURES, mine=not user.at_least("supervisor"), cap=COUNT_CAP,
                           nps_group=drill.nps_group)  # fmt: skip


def _listing_args() -> tuple[str, list[Any], dict[str, str]]:
    """The call records' search words, SQL conditions (an agent's: only calls offered to or taken by them)
    and the filters given (to keep in links)."""
    user = current_user()
    assert user is not None
    q = request.args.get("q", "").strip()[:200]
    call_filter, shown = call_filter_args()
    where = drill.conditions(_store(), call_filter, _report_options()) if call_filter else []
    if not user.at_least("supervisor"):
        where.append(drill.seen_by(user.name))
    return q, where, shown


EXPORT_CAP = 50_000
"""A listing's CSV export holds at most this many calls (the newest)."""
EXPORT_PAGE = 1000
"""Calls read from the store at a time while a CSV export streams."""


@bp.route("/calls.csv")
@login_required("agent")
def calls_export() -> Response:
    """The calls a listing holds (same filters, same access as ``/calls``; every page) as CSV, newest first,
    streamed :data:`EXPORT_PAGE` calls at a time; caller numbers masked but their last 4 digits."""
    q, where, shown = _listing_args()
    where.append(drill.C.started_at <= time.time())  # calls starting meanwhile would shift the pages
    store = _store()

    def pages() -> Iterator[list[dict[str, Any]]]:
        page = EXPORT_PAGE
        for offset in range(0, EXPORT_CAP, page):
            rows = store.list_calls(search=q or None, where=where, limit=min(page, EXPORT_CAP - offset),
                                    offset=offset)  # fmt: skip
            if rows:
                yield rows
            if len(rows) < page:
                return

    name = "ivr-calls" + "".join(f"-{shown[k]}" for k in ("figure", "since", "until") if k in shown)
    return Response(stream_with_context(calls_csv(pages())), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})  # fmt: skip


@bp.route("/calls/<call_id:call_id>")
@login_required("agent")
def call_detail(call_id: str) -> str:
    user = current_user()
    assert user is not None
    call = _store().get_call(call_id)
    if call is None or not can_see_call(user, call):
        abort(404)
    return render_template("call.html", call=shown_call(call), recordings=len(recording_paths(call)))


@bp.route("/calls/<call_id>/recordings/<int:number>")
@login_required("agent")
def call_recording(call_id: str, number: int) -> Response:
    """A call's recording or voicemail (the files are private to the server: mode 600), for the people
    allowed to see the call: the agent it was offered to or taken by, supervisors."""
    user = current_user()
    assert user is not None
    call = _store().get_call(call_id)
    if call is None or not can_see_call(user, call):
        abort(404)
    paths = recording_paths(call)
    if not 0 <= number < len(paths):
        abort(404)
    return audio_response(Path(paths[number]), _store().sealer)


def _voicemail_for(user: Any, recording_id: int) -> dict[str, Any]:
    """The voicemail ``recording_id`` if ``user`` works through its queue, else 404."""
    mail = _store().get_recording(recording_id)
    queues = voicemail_queues(user, _queue_config())
    if mail is None or mail["kind"] != "voicemail" or (queues is not None and mail["queue"] not in queues):
        abort(404)
    return mail


@bp.route("/voicemail")
@login_required("agent")
def voicemail() -> str:
    """The voicemail inbox: supervisors see every queue's, agents their queues' (numbers masked)."""
    user = current_user()
    assert user is not None
    open_only = request.args.get("open") == "1"
    page = int_arg("page", 0, 0, 10_000_000)
    rows = _store().list_voicemails(voicemail_queues(user, _queue_config()), open_only=open_only, limit=50,
                                    offset=page * 50)
    return render_template("voicemail.html", mails=[shown_voicemail(user, m) for m in rows], open_only=open_only,
                           page=page)


@bp.route("/voicemail/<int:recording_id>/audio")
@login_required("agent")
def voicemail_audio(recording_id: int) -> Response:
    user = current_user()
    return audio_response(Path(_voicemail_for(user, recording_id)["path"]), _store().sealer)


@bp.route("/voicemail/<int:recording_id>", methods=["POST"])
@login_required("agent")
def voicemail_update(recording_id: int) -> Response:
    """Mark a voicemail called back (or not) and/or save its notes."""
    user = current_user()
    assert user is not None
    _voicemail_for(user, recording_id)
    called_back = request.form.get("called_back")
    notes = request.form.get("notes")
    _store().update_voicemail(
        recording_id, called_back=None if called_back is None else called_back == "1", by=user.name,
        at=time.time(), notes=None if notes is None else notes.strip()[:4000],
    )
    return redirect(url_for("console.voicemail", open=request.args.get("open") or None))


@bp.route("/admin/users", methods=["GET", "POST"])
@login_required("admin")
def users() -> Any:
    if request.method == "POST":
        try:
            add_user(_store(), request.form.get("name", ""), request.form.get("password", ""), request.form["role"])
            flash(f"user {request.form.get('name')} saved")
        except (IvrError, KeyError) as exc:
            flash(f"not saved: {exc}")
        return redirect(url_for("console.users"))
    return render_template("users.html", users=_store().list_users(), roles=ROLES)
