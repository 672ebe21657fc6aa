"""Business hours with a fake clock: calendars, ``open('…')`` in flows, closed queues, their errors."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.errors import ConfigError
from ivr.flow.loader import check_flow, load_flow
from ivr.flow.testing import KeywordClassifier, ScriptedCall
from ivr.hours import OpenCheck
from ivr.queue import Acd, Overflowed, Refused, parse_queues
from ivr.queue.config import AcdConfig
from ivr.store import open_store
from ivr.testing.fakes import FakeClock, FakeConnector

BERLIN = "Europe/Berlin"

QUEUES = """
calendars:
  office:
    timezone: Europe/Berlin
    weekly:
      mon-fri: "08:00-18:00"
      sat: ["09:00-12:00", "13:00-16:00"]
      sun: closed
    holidays:
      2026-12-24: "08:00-12:00"
      2026-12-25: closed
  night:
    timezone: America/New_York
    weekly:
      fri: "22:00-02:00"
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
queues:
  support:
    hours: office
    overflow: {voicemail: after_hours, when: [closed, no_agents]}
  strict:
    hours: office
    overflow: {voicemail: box, when: [max_wait]}
  own:
    hours:
      timezone: UTC
      weekly: {mon-sun: "00:00-24:00"}
  anytime: {}
"""


def at(year: int, month: int, day: int, hour: int, minute: int = 0, tz: str = BERLIN) -> float:
    """Unix time of a local wall-clock time in ``tz``."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.fixture
def config() -> AcdConfig:
    return parse_queues(QUEUES, "queues.yaml")


def test_weekly_hours_across_days(config: AcdConfig) -> None:
    office = config.calendars["office"]
    # 2026-01-05 is a Monday
    assert not office.is_open(at(2026, 1, 5, 7, 59))
    assert office.is_open(at(2026, 1, 5, 8, 0))
    assert office.is_open(at(2026, 1, 9, 17, 59))  # Friday
    assert not office.is_open(at(2026, 1, 9, 18, 0))
    assert office.is_open(at(2026, 1, 10, 11, 0))  # Saturday: two ranges with a lunch break
    assert not office.is_open(at(2026, 1, 10, 12, 30))
    assert office.is_open(at(2026, 1, 10, 13, 0))
    assert not office.is_open(at(2026, 1, 11, 10, 0))  # Sunday: closed


def test_a_range_crossing_midnight_runs_into_the_next_morning(config: AcdConfig) -> None:
    night = config.calendars["night"]
    ny = "America/New_York"
    assert not night.is_open(at(2026, 1, 9, 21, 59, ny))  # Friday evening
    assert night.is_open(at(2026, 1, 9, 23, 0, ny))
    assert night.is_open(at(2026, 1, 10, 1, 59, ny))  # Saturday morning: still Friday's range
    assert not night.is_open(at(2026, 1, 10, 2, 0, ny))
    assert not night.is_open(at(2026, 1, 8, 23, 0, ny))  # Thursday has no hours
    assert not night.is_open(at(2026, 1, 10, 23, 0, ny))  # nor Saturday


def test_holidays_close_or_shorten_the_day(config: AcdConfig) -> None:
    office = config.calendars["office"]
    assert office.is_open(at(2026, 12, 24, 11, 0))  # Thursday, short day
    assert not office.is_open(at(2026, 12, 24, 14, 0))
    assert not office.is_open(at(2026, 12, 25, 10, 0))  # Friday, closed
    assert office.is_open(at(2026, 12, 18, 10, 0))  # the Friday before: a normal day


def test_hours_are_local_time_across_daylight_saving_changes(config: AcdConfig) -> None:
    office = config.calendars["office"]
    utc = "UTC"
    # Saturday 2026-03-28 is winter time (UTC+1): 07:30 UTC is 08:30 local, before Saturday's 09:00
    assert not office.is_open(at(2026, 3, 28, 7, 30, utc))
    assert office.is_open(at(2026, 3, 28, 8, 0, utc))  # 09:00 local
    # Monday 2026-03-30 is summer time (UTC+2): 06:30 UTC is 08:30 local, open; a fixed +1 would say 07:30
    assert office.is_open(at(2026, 3, 30, 6, 30, utc))
    assert not office.is_open(at(2026, 3, 30, 16, 0, utc))  # 18:00 local
    # Monday 2026-10-26, back to winter time: 17:00 UTC is 18:00 local (closed), 16:30 UTC is 17:30 (open)
    assert office.is_open(at(2026, 10, 26, 16, 30, utc))
    assert not office.is_open(at(2026, 10, 26, 17, 0, utc))


FLOW = """
version: 1
name: hours
start: check
nodes:
  check:
    branch:
      - if: open('support') and not open('office')
        goto: odd
      - if: open('office')
        goto: welcome
    otherwise: closed
  odd:
    say: "This cannot happen: the support queue keeps the office hours."
    next: bye
  welcome:
    say: "We are open."
    next: bye
  closed:
    say: "We are closed; call again between eight and six."
    next: bye
  bye:
    hangup: true
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_flow_branches_on_open_with_the_servers_clock(tmp_path: Path, config: AcdConfig) -> None:
    flow = load_flow(write(tmp_path / "hours.yaml", FLOW), classifier_factory=KeywordClassifier.build,
                     server_queues=config.queues, hour_names=config.hour_names())
    clock = FakeClock(at(2026, 1, 5, 9, 0))  # Monday morning
    hours = OpenCheck(config.open_hours(), clock)
    assert ScriptedCall(flow, hours=hours).said() == ["We are open."]
    clock.now = at(2026, 1, 5, 19, 0)
    assert ScriptedCall(flow, hours=hours).said() == ["We are closed; call again between eight and six."]
    clock.now = at(2026, 12, 25, 10, 0)
    assert ScriptedCall(flow, hours=hours).said() == ["We are closed; call again between eight and six."]


def test_a_flow_naming_an_unknown_calendar_is_an_error_with_its_position(tmp_path: Path, config: AcdConfig) -> None:
    path = write(tmp_path / "bad.yaml", FLOW.replace("open('office')", "open('ofice')"))
    problems = [str(d) for d in check_flow(path, server_queues=config.queues, hour_names=config.hour_names())]
    assert problems == [
        f"{path}:7:13: open('ofice'): no calendar or queue 'ofice' (did you mean 'office'?); the queues file has: "
        "anytime, night, office, own, strict, support (define it under calendars:)",
        f"{path}:9:13: open('ofice'): no calendar or queue 'ofice' (did you mean 'office'?); the queues file has: "
        "anytime, night, office, own, strict, support (define it under calendars:)",
    ]
    assert check_flow(path) == []  # without a queues file the names are looked up when the call runs


def test_without_hours_open_fails_the_call_safely(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path / "hours.yaml", FLOW), classifier_factory=KeywordClassifier.build)
    call = ScriptedCall(flow)
    assert "We are open." not in call.said()
    assert call.finished and "no business hours here" in str(call.interpreter.context()["error"])


class Rig:
    def __init__(self, tmp_path: Path, start: float) -> None:
        self.clock = FakeClock(start)
        self.acd = Acd(parse_queues(QUEUES), FakeConnector(), open_store(tmp_path / "ivr.db"), self.clock)
        self.acd.set_agent_state("ann", "break", "lunch")  # logged in, takes no call: callers wait

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.acd.tick()


def test_callers_waiting_when_the_queue_closes_overflow(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at(2026, 1, 9, 17, 58))  # Friday, two minutes before closing
    rig.acd.enqueue("c1", "support")
    rig.acd.enqueue("c2", "strict")
    rig.later(60)
    assert rig.acd.poll("c1") == [] and rig.acd.poll("c2") == []
    rig.later(60)  # 18:00
    assert rig.acd.poll("c1") == [Overflowed("voicemail", "after_hours", "closed")]
    [refused] = rig.acd.poll("c2")  # its overflow covers only max_wait: the call goes back to the flow
    assert isinstance(refused, Refused) and refused.reason == "closed"
    assert rig.acd.snapshot()["queues"]["support"] == []


def test_a_closed_queue_sends_new_callers_on_at_once_and_opens_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at(2026, 1, 10, 12, 30))  # Saturday lunch break
    rig.acd.enqueue("c1", "support")
    assert rig.acd.poll("c1") == [Overflowed("voicemail", "after_hours", "closed")]
    rig.acd.enqueue("c2", "own")  # open around the clock
    rig.acd.enqueue("c3", "anytime")  # no hours at all
    assert rig.acd.poll("c2") == [] and rig.acd.poll("c3") == []
    rig.clock.now = at(2026, 1, 10, 13, 0)
    rig.acd.enqueue("c4", "support")
    assert rig.acd.poll("c4") == []
    assert [e["call_id"] for e in rig.acd.snapshot()["queues"]["support"]] == ["c4"]


BAD = """\
calendars:
  office:
    timezone: Europe/Berlln
    weekly:
      mon-fri: "08:00-25:00"
      sat: ["09:00-12:00", "noon"]
      sunday: closed
    holidays:
      christmas: closed
      2026-12-31: "10:00-10:00"
  fine:
    timezone: UTC
    weekly: {mon: "08:00-18:00"}
    hours: wrong
agents: {}
queues:
  a:
    hours: ofice
  b:
    overflow: {voicemail: box, when: [closed]}
  fine:
    overflow: {voicemail: box}
"""


def test_calendar_mistakes_are_reported_with_their_positions() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_queues(BAD, "q.yaml")
    assert [str(d) for d in caught.value.diagnostics] == [
        "q.yaml:3:15: unknown time zone 'Europe/Berlln'; use an IANA name such as Europe/Berlin, America/New_York "
        "or UTC",
        'q.yaml:5:16: bad opening hours \'08:00-25:00\': write HH:MM-HH:MM (00:00 to 24:00), for example '
        '"08:00-18:00", a list such as ["08:00-12:00", "13:00-17:00"], or closed',
        'q.yaml:6:28: bad opening hours \'noon\': write HH:MM-HH:MM (00:00 to 24:00), for example "08:00-18:00", '
        'a list such as ["08:00-12:00", "13:00-17:00"], or closed',
        "q.yaml:7:7: unknown day 'sunday'; use mon, tue, wed, thu, fri, sat, sun or a span such as mon-fri",
        "q.yaml:9:7: holiday 'christmas' is not a date; write it as YYYY-MM-DD, for example 2026-12-25",
        'q.yaml:10:19: bad opening hours \'10:00-10:00\': write HH:MM-HH:MM (00:00 to 24:00), for example '
        '"08:00-18:00", a list such as ["08:00-12:00", "13:00-17:00"], or closed',
        "q.yaml:11:3: calendar 'fine' has the name of a queue, so open('fine') would be ambiguous; rename it, "
        "or give queue 'fine' hours: fine",
        "q.yaml:14:5: unknown key 'hours' in calendar 'fine'; expected one of: holidays, timezone, weekly",
        "q.yaml:18:12: queue 'a': hours 'ofice' is not a calendar under calendars: (fine, office); name one, or "
        "write the hours here (timezone:, weekly:)",
        "q.yaml:20:38: overflow of queue 'b' lists closed, but the queue has no hours:; add hours: CALENDAR or "
        "take closed out of when",
    ]


def test_the_shipped_queues_and_flows_stay_open_around_the_clock() -> None:
    from ivr.queue import load_queues

    root = Path(__file__).resolve().parents[1]
    config = load_queues(root / "config" / "queues.yaml")
    for hour in range(0, 24 * 7, 5):  # every fifth hour of a week, whatever the time zone
        when = at(2026, 1, 5, 0) + hour * 3600
        assert all(q.is_open(when) for q in config.queues.values())
        assert all(c.is_open(when) for c in config.calendars.values())
    assert check_flow(root / "flows" / "hotline.yaml", server_queues=config.queues,
                      hour_names=config.hour_names()) == []


def test_the_server_checks_open_names_and_answers_them_with_its_clock(tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.server import IvrServer, ServerConfig

    flows = tmp_path / "flows"
    flows.mkdir()
    write(flows / "hours.yaml", FLOW)
    queues = write(tmp_path / "queues.yaml", QUEUES)
    clock = FakeClock(at(2026, 1, 5, 9, 0))
    server = IvrServer(ServerConfig(flows_dir=flows, queues_file=queues, database=str(tmp_path / "ivr.db")),
                       connector=FakeConnector(), clock=clock)
    assert server.hours is not None and server.hours("support") and server.hours("anytime")
    clock.now = at(2026, 1, 5, 18, 0)
    assert not server.hours("support") and not server.hours("office") and server.hours("own")

    write(flows / "hours.yaml", FLOW.replace("open('office')", "open('ofice')"))
    with pytest.raises(FlowError, match=r"hours.yaml:7:13: open\('ofice'\): no calendar or queue 'ofice'"):
        IvrServer(ServerConfig(flows_dir=flows, queues_file=queues, database=str(tmp_path / "ivr.db")),
                  connector=FakeConnector(), clock=clock)
