"""Queues and agents from YAML (``config/queues.yaml``), checked with ``file:line:col`` diagnostics.

Every problem in the file is collected before :class:`~ivr.errors.ConfigError` is raised, so the
designer fixes them all in one pass.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError, Diagnostic
from ivr.hours import Calendar, parse_calendar
from ivr.yamlsource import Y, load_yaml_file, parse_yaml

STRATEGIES = ("longest-idle", "round-robin", "ring-all")
CONNECTIONS = ("bridged", "refer")
OVERFLOW_KINDS = ("queue", "voicemail", "node")
OVERFLOW_WHEN = ("max_wait", "no_agents", "closed")
ANNOUNCE_FIELDS = frozenset({"position", "wait_minutes", "wait_text", "queue"})
DEFAULT_MAX_WAIT = 600.0  # seconds: no caller waits longer in a queue that sets no max_wait of its own
DEFAULT_NO_AGENTS_GRACE = 5.0  # seconds a queue without overflow holds a caller while no member is logged in


@dataclass(frozen=True)
class AgentConfig:
    """A human agent: login name (same as the console user), SIP URI, skills, optional ring timeout."""

    name: str
    uri: str
    skills: frozenset[str] = frozenset()
    ring_timeout: float | None = None


@dataclass(frozen=True)
class PriorityRule:
    """Priority from a flow variable: ``values`` maps the variable's value (as text, lower case) to a number."""

    variable: str
    values: Mapping[str, int] = field(default_factory=dict)
    default: int = 0

    def priority_for(self, context: Mapping[str, Any]) -> int:
        """The priority for a caller's context (looks in variables, slots, then the top level)."""
        for scope in ("variables", "slots"):
            inner = context.get(scope)
            if isinstance(inner, Mapping) and self.variable in inner:
                return self._lookup(inner[self.variable])
        if self.variable in context:
            return self._lookup(context[self.variable])
        return self.default

    def _lookup(self, value: object) -> int:
        return self.values.get(str(value).strip().lower(), self.default)


@dataclass(frozen=True)
class Overflow:
    """Where a caller goes when the wait is too long, nobody is logged in or the queue is closed (its
    ``hours``); ``when`` lists which of these it covers (all by default)."""

    kind: str  # queue | voicemail | node
    target: str
    when: frozenset[str] = frozenset(OVERFLOW_WHEN)


@dataclass(frozen=True)
class Announcement:
    """Periodic position / estimated-wait announcement (text the call session speaks)."""

    every: float = 30.0
    first_after: float = 0.0
    text: str | None = None
    """The queue's own wording; None: the calling flow's ``queue_announcement`` prompt, in its language."""


@dataclass(frozen=True)
class CallbackConfig:
    """Virtual hold: once the estimated wait reaches ``offer_after`` seconds the caller may press ``key`` to
    keep their place and be called back; an unanswered callback is tried again ``retries`` times,
    ``retry_after`` seconds apart; a number gets at most ``max_per_number_per_day`` callbacks a day."""

    offer_after: float = 120.0
    key: str = "1"
    retries: int = 2
    retry_after: float = 120.0
    max_per_number_per_day: int = 3


@dataclass(frozen=True)
class QueueConfig:
    """One queue: who may take its calls, how they are offered and what happens when the wait is long.

    No caller is held forever: after ``max_wait`` (default :data:`DEFAULT_MAX_WAIT`) the caller overflows
    when ``overflow.when`` lists ``max_wait``, else the queue gives the call back to the session as a failed
    transfer. A queue without ``overflow`` gives it back as well after ``no_agents_grace`` seconds with no
    member logged in.
    """

    name: str
    strategy: str = "longest-idle"
    agents: tuple[str, ...] | None = None  # None: every agent with the required skills
    skills: frozenset[str] = frozenset()
    ring_timeout: float = 15.0
    wrap_up: float = 10.0
    max_wait: float = DEFAULT_MAX_WAIT
    no_agents_grace: float = DEFAULT_NO_AGENTS_GRACE
    connection: str = "bridged"
    priority: PriorityRule | None = None
    announce: Announcement | None = None
    music_on_hold: str | None = None
    overflow: Overflow | None = None
    handle_time: float = 180.0  # assumed average handle time for the estimated wait, until calls are measured
    hours: Calendar | None = None  # None: open around the clock
    record: str | None = None
    """Record the agent part of its calls (``record: true`` or ``{announce: text}``): the announcement said
    when the caller joins the queue ('' none); None: not recorded."""
    callback: CallbackConfig | None = None
    """Offer waiting callers a callback (``callback:``); None: no callbacks."""

    def is_open(self, at: float) -> bool:
        """Whether the queue takes callers at Unix time ``at``."""
        return self.hours is None or self.hours.is_open(at)


@dataclass(frozen=True)
class AcdConfig:
    """Everything in ``queues.yaml``."""

    agents: Mapping[str, AgentConfig]
    queues: Mapping[str, QueueConfig]
    max_missed_offers: int = 3
    service_level_seconds: float = 20.0
    path: str = ""
    calendars: Mapping[str, Calendar] = field(default_factory=dict)

    def open_hours(self) -> dict[str, Calendar | None]:
        """What ``open(name)`` reads in a flow: each calendar, and each queue's hours (None: always open)."""
        return {**{name: q.hours for name, q in self.queues.items()}, **self.calendars}

    def hour_names(self) -> frozenset[str]:
        """Every name ``open(name)`` accepts: the calendars and the queues."""
        return frozenset(self.open_hours())

    def members(self, queue: str) -> list[AgentConfig]:
        """Agents that may take calls of ``queue``: listed members (or everyone) with the required skills."""
        q = self.queues[queue]
        names = q.agents if q.agents is not None else tuple(self.agents)
        return [self.agents[n] for n in names if n in self.agents and q.skills <= self.agents[n].skills]


class _Checker:
    """Collects diagnostics with positions while walking the YAML tree."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []

    def at(self, node: Y, key: str | int | None, message: str, *, value: bool = False) -> None:
        """Report at ``key`` of a mapping (at its value with ``value``), at item ``key`` of a list, else at
        ``node`` itself."""
        if isinstance(key, str) and key in node.entries:
            key_node, value_node = node.entries[key]
            node = value_node if value else key_node
        elif isinstance(key, int) and 0 <= key < len(node.items):
            node = node.items[key]
        self.diagnostics.append(Diagnostic(self.path, node.line, node.col, message))

    def mapping(self, parent: Y, key: str, what: str) -> Y | None:
        node = parent.get(key)
        if node is None or (node.kind == "scalar" and node.scalar is None):
            return Y("map", node.line, node.col) if node is not None else Y("map", parent.line, parent.col)
        if node.kind != "map":
            self.at(parent, key, f"{what} must be a mapping (key: value lines)", value=True)
            return None
        return node

    def report(self, node: Y, message: str) -> None:
        """Report at ``node``."""
        self.diagnostics.append(Diagnostic(self.path, node.line, node.col, message))

    def known_keys(self, node: Y, allowed: set[str], what: str) -> None:
        for key in node.entries:
            if key not in allowed:
                self.at(node, key, f"unknown key {key!r} in {what}; expected one of: {', '.join(sorted(allowed))}")

    def number(self, node: Y, key: str, default: float | None, *, minimum: float = 0.0) -> float | None:
        if key not in node.entries:
            return default
        value = _plain(node, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            self.at(node, key, f"{key} must be a number of seconds >= {minimum:g}, not {value!r}", value=True)
            return default
        return float(value)

    def names(self, node: Y, key: str, what: str) -> tuple[str, ...] | None:
        if key not in node.entries:
            return None
        value = _plain(node, key)
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.at(node, key, f"{what} must be a list of names, for example [billing, english]", value=True)
            return ()
        return tuple(value)

    def choice(self, node: Y, key: str, choices: tuple[str, ...], default: str) -> str:
        value = _plain(node, key, default)
        if value not in choices:
            self.at(node, key, f"{key} must be one of {', '.join(choices)}, not {value!r}", value=True)
            return default
        return str(value)


def _plain(node: Y, key: str, default: Any = None) -> Any:
    """The plain value under ``key`` of a mapping (``default`` when the key is absent)."""
    value = node.get(key)
    return default if value is None else value.plain()


_AGENT_KEYS = {"uri", "skills", "ring_timeout"}
_QUEUE_KEYS = {
    "strategy", "agents", "skills", "ring_timeout", "wrap_up", "max_wait", "no_agents_grace", "connection",
    "priority", "announce", "music_on_hold", "overflow", "handle_time", "hours", "record", "callback",
}  # fmt: skip
_TOP_KEYS = {"version", "agents", "queues", "max_missed_offers", "service_level_seconds", "calendars"}


def _agent(c: _Checker, agents: Y, name: str) -> AgentConfig | None:
    node = c.mapping(agents, name, f"agent {name!r}")
    if node is None:
        return None
    c.known_keys(node, _AGENT_KEYS, f"agent {name!r}")
    uri = _plain(node, "uri")
    if not isinstance(uri, str) or not uri.startswith(("sip:", "sips:")):
        where = (node, "uri") if "uri" in node.entries else (agents, name)
        c.at(*where, f"agent {name!r} needs a SIP URI, for example uri: sip:{name}@10.0.0.5",
             value="uri" in node.entries)
        uri = ""
    skills = c.names(node, "skills", "skills") or ()
    return AgentConfig(name, uri, frozenset(skills), c.number(node, "ring_timeout", None, minimum=1))


def _priority(c: _Checker, node: Y) -> PriorityRule | None:
    p = c.mapping(node, "priority", "priority")
    if p is None:
        return None
    c.known_keys(p, {"variable", "values", "default"}, "priority")
    variable = _plain(p, "variable")
    if not isinstance(variable, str) or not variable:
        c.at(node, "priority", "priority needs variable: the flow variable to read (for example vip)")
        return None
    values: dict[str, int] = {}
    raw = p.get("values")
    if raw is not None and raw.kind != "map":
        c.at(p, "values", "priority values must map a variable value to a number, for example {gold: 10}", value=True)
    elif raw is not None:
        for k, (_, v) in raw.entries.items():
            if isinstance(v.scalar, bool) or not isinstance(v.scalar, int):
                c.at(raw, k, f"priority for {k!r} must be a whole number (higher goes first), not {v.plain()!r}",
                     value=True)
            else:
                values[k.lower()] = v.scalar
    default = _plain(p, "default", 0)
    if isinstance(default, bool) or not isinstance(default, int):
        c.at(p, "default", "priority default must be a whole number", value=True)
        default = 0
    return PriorityRule(variable, values, default)


def _announce(c: _Checker, node: Y) -> Announcement | None:
    a = c.mapping(node, "announce", "announce")
    if a is None:
        return None
    c.known_keys(a, {"every", "first_after", "text"}, "announce")
    text = _plain(a, "text")
    if text is None:
        pass
    elif not isinstance(text, str):
        c.at(a, "text", "announce text must be a string", value=True)
        text = None
    else:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        except ValueError as exc:
            c.at(
                a, "text", f"announce text has a bad placeholder ({exc}); use {{position}} or {{wait_text}}", value=True
            )
            fields = set()
        for f in sorted(fields - ANNOUNCE_FIELDS):
            c.at(a, "text", f"unknown placeholder {{{f}}}; use: {', '.join(sorted(ANNOUNCE_FIELDS))}", value=True)
    every = c.number(a, "every", 30.0, minimum=5) or 30.0
    return Announcement(every, c.number(a, "first_after", 0.0) or 0.0, text)


def _overflow(c: _Checker, node: Y) -> Overflow | None:
    o = c.mapping(node, "overflow", "overflow")
    if o is None:
        return None
    c.known_keys(o, {*OVERFLOW_KINDS, "when"}, "overflow")
    kinds = [k for k in OVERFLOW_KINDS if k in o.entries]
    if len(kinds) != 1:
        c.at(node, "overflow", "overflow needs exactly one target: queue: NAME, voicemail: BOX or node: FLOW_NODE")
        return None
    target = _plain(o, kinds[0])
    if not isinstance(target, str) or not target:
        c.at(o, kinds[0], f"overflow {kinds[0]} must be a name", value=True)
        return None
    when = c.names(o, "when", "overflow when") or OVERFLOW_WHEN
    for w in when:
        if w not in OVERFLOW_WHEN:
            c.at(o, "when", f"overflow when lists reasons among {', '.join(OVERFLOW_WHEN)}, not {w!r}", value=True)
    return Overflow(kinds[0], target, frozenset(w for w in when if w in OVERFLOW_WHEN))


def _hours(c: _Checker, node: Y, name: str, calendars: Mapping[str, Calendar]) -> Calendar | None:
    """A queue's ``hours``: the name of a calendar of the file, or a calendar of its own."""
    value = node.get("hours")
    if value is None:
        return None
    if value.kind == "map":
        return parse_calendar(name, value, c.report)
    if not isinstance(value.scalar, str) or value.scalar not in calendars:
        known = ", ".join(sorted(calendars)) or "none yet"
        c.at(node, "hours", f"queue {name!r}: hours {value.plain()!r} is not a calendar under calendars: "
                            f"({known}); name one, or write the hours here (timezone:, weekly:)", value=True)
        return None
    return calendars[value.scalar]


def _queue(
    c: _Checker, queues: Y, name: str, agents: Mapping[str, AgentConfig], calendars: Mapping[str, Calendar]
) -> QueueConfig | None:
    node = c.mapping(queues, name, f"queue {name!r}")
    if node is None:
        return None
    c.known_keys(node, _QUEUE_KEYS, f"queue {name!r}")
    members = c.names(node, "agents", "agents")
    for i, member in enumerate(members or ()):
        if member not in agents:
            seq = node.get("agents")
            listed = seq is not None and seq.kind == "seq"
            c.at(seq if listed and seq is not None else node, i if listed else "agents",
                 f"queue {name!r} lists unknown agent {member!r}; define it under agents:")  # fmt: skip
    moh = _plain(node, "music_on_hold")
    if moh is not None:
        moh_path = Path(str(moh))
        if not moh_path.is_absolute():
            moh_path = Path(c.path).parent / moh_path
        if not moh_path.is_file():
            c.at(node, "music_on_hold", f"music on hold file {str(moh)!r} not found (looked at {moh_path})", value=True)
        moh = str(moh_path.resolve())
    return QueueConfig(
        name=name,
        strategy=c.choice(node, "strategy", STRATEGIES, "longest-idle"),
        agents=members,
        skills=frozenset(c.names(node, "skills", "skills") or ()),
        ring_timeout=c.number(node, "ring_timeout", 15.0, minimum=1) or 15.0,
        wrap_up=c.number(node, "wrap_up", 10.0) or 0.0,
        max_wait=c.number(node, "max_wait", DEFAULT_MAX_WAIT, minimum=1) or DEFAULT_MAX_WAIT,
        no_agents_grace=c.number(node, "no_agents_grace", DEFAULT_NO_AGENTS_GRACE) or 0.0,
        connection=c.choice(node, "connection", CONNECTIONS, "bridged"),
        priority=_priority(c, node) if "priority" in node.entries else None,
        announce=_announce(c, node) if "announce" in node.entries else None,
        music_on_hold=moh,
        overflow=_overflow(c, node) if "overflow" in node.entries else None,
        handle_time=c.number(node, "handle_time", 180.0, minimum=1) or 180.0,
        hours=_hours(c, node, name, calendars),
        record=_record(c, node, name),
        callback=_callback(c, node, name) if "callback" in node.entries else None,
    )


_CALLBACK_KEYS = {"offer_after", "key", "retries", "retry_after", "max_per_number_per_day"}


def _callback(c: _Checker, node: Y, name: str) -> CallbackConfig | None:
    """A queue's ``callback:`` (virtual hold) settings."""
    cb = c.mapping(node, "callback", f"queue {name!r} callback")
    if cb is None:
        return None
    c.known_keys(cb, _CALLBACK_KEYS, f"queue {name!r} callback")
    key = _plain(cb, "key", "1")
    if not isinstance(key, str | int) or isinstance(key, bool) or str(key) not in "0123456789*#" or len(str(key)) != 1:
        c.at(cb, "key", f"callback key must be one keypad key (0-9, * or #), not {key!r}", value=True)
        key = "1"
    counts: dict[str, int] = {}
    for field_name, default, minimum in (("retries", 2, 0), ("max_per_number_per_day", 3, 1)):
        value = _plain(cb, field_name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            c.at(cb, field_name, f"callback {field_name} must be a whole number >= {minimum}, not {value!r}",
                 value=True)
            value = default
        counts[field_name] = value
    return CallbackConfig(
        offer_after=c.number(cb, "offer_after", 120.0) or 0.0,
        key=str(key),
        retries=counts["retries"],
        retry_after=c.number(cb, "retry_after", 120.0, minimum=1) or 120.0,
        max_per_number_per_day=counts["max_per_number_per_day"],
    )


def _record(c: _Checker, node: Y, name: str) -> str | None:
    """A queue's ``record:``: true (no announcement), false, or ``{announce: text}``."""
    value = _plain(node, "record")
    if value is None or value is False:
        return None
    if value is True:
        return ""
    if isinstance(value, dict) and set(value) <= {"announce"} and isinstance(value.get("announce", ""), str):
        return str(value.get("announce", ""))
    c.at(node, "record", f"queue {name!r}: 'record' must be true, false or {{announce: \"This call may be "
                         "recorded.\"}}", value=True)
    return None


def _check_overflow_targets(c: _Checker, queues_node: Y, queues: dict[str, QueueConfig]) -> None:
    for name, q in queues.items():
        node = queues_node.get(name)
        assert node is not None  # every checked queue is one of the file's
        o = node.get("overflow")
        if q.overflow and q.hours is None and "closed" in q.overflow.when and o is not None and "when" in o.entries:
            c.at(o, "when", f"overflow of queue {name!r} lists closed, but the queue has no hours:; add "
                            "hours: CALENDAR or take closed out of when", value=True)
        if q.overflow and q.overflow.kind == "queue":
            if q.overflow.target not in queues:
                c.at(node, "overflow", f"overflow queue {q.overflow.target!r} is not defined under queues:")
                continue
            seen, current = {name}, q.overflow.target
            while current in queues:
                if current in seen:
                    c.at(node, "overflow", f"overflow of queue {name!r} loops back to {current!r}")
                    break
                seen.add(current)
                nxt = queues[current].overflow
                current = nxt.target if nxt and nxt.kind == "queue" else ""


_KIND, _ADVICE = "queue configuration", "is it the right file? a queues file is usually a few kilobytes"
_NOT_QUEUES = "the file must be a mapping with agents: and queues:"


def parse_queues(text: str, path: str = "<queues>") -> AcdConfig:
    """Parse and check queue configuration text; raises ConfigError listing every problem."""
    root, problems = parse_yaml(text, path, kind=_KIND, advice=_ADVICE, empty=_NOT_QUEUES)
    return _check(root, problems, path)


def load_queues(path: str | Path) -> AcdConfig:
    """Load and check a queue configuration file."""
    root, problems = load_yaml_file(Path(path), str(path), kind=_KIND, advice=_ADVICE, empty=_NOT_QUEUES)
    return _check(root, problems, str(path))


def _check(root: Y | None, problems: list[Diagnostic], path: str) -> AcdConfig:
    if root is None or problems:
        raise ConfigError(problems)
    if root.kind != "map":
        raise ConfigError([Diagnostic(path, 1, 1, _NOT_QUEUES)])
    c = _Checker(path)
    c.known_keys(root, _TOP_KEYS, "the file")
    agents: dict[str, AgentConfig] = {}
    agents_node = (c.mapping(root, "agents", "agents") if "agents" in root.entries else None) or Y("map", 1, 1)
    for name in agents_node.entries:
        agent = _agent(c, agents_node, name)
        if agent:
            agents[agent.name] = agent
    calendars: dict[str, Calendar] = {}
    calendars_node = c.mapping(root, "calendars", "calendars") if "calendars" in root.entries else None
    for name, (_, value) in (calendars_node.entries if calendars_node else {}).items():
        calendars[name] = parse_calendar(name, value, c.report)
    queues: dict[str, QueueConfig] = {}
    queues_node = (c.mapping(root, "queues", "queues") if "queues" in root.entries else None) or Y("map", 1, 1)
    if "queues" not in root.entries:
        c.at(root, None, "no queues: defined; add at least one queue")
    for name in queues_node.entries:
        queue = _queue(c, queues_node, name, agents, calendars)
        if queue:
            queues[queue.name] = queue
    if queues_node.entries:
        _check_overflow_targets(c, queues_node, queues)
    for name, calendar in calendars.items():
        if name in queues and queues[name].hours is not calendar:
            assert calendars_node is not None
            c.at(calendars_node, name, f"calendar {name!r} has the name of a queue, so open('{name}') would be "
                                       f"ambiguous; rename it, or give queue {name!r} hours: {name}")
    missed = _plain(root, "max_missed_offers", 3)
    if isinstance(missed, bool) or not isinstance(missed, int) or missed < 1:
        c.at(root, "max_missed_offers", "max_missed_offers must be a whole number >= 1", value=True)
        missed = 3
    service_level = c.number(root, "service_level_seconds", 20.0, minimum=1) or 20.0
    if c.diagnostics:
        raise ConfigError(sorted(c.diagnostics, key=lambda d: (d.line, d.column)))
    return AcdConfig(agents, queues, missed, service_level, path, calendars)
