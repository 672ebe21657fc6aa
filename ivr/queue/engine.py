"""The ACD: waiting callers, agent states, and who gets offered which call next.

Deterministic: time comes from an injectable clock and timers advance only in :meth:`Acd.tick` (a
background thread calls it every 100 ms after :meth:`Acd.start`; tests call it after moving a fake
clock). Every state change is written through to the store, so a console in another process sees it and
agent states survive a restart.

The lock guards only memory: store writes and connector calls (offers, cancels) are queued under it, in
the order of the changes they follow, and carried out after it is released, one at a time and in that
order. A slow database or a connector that takes its time to ring never stalls other calls' sessions,
the console or the ticker.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ivr.errors import IvrError
from ivr.flow.prompts import PROMPT_DEFAULTS, queue_announcement
from ivr.queue import callbacks as cb
from ivr.queue.callbacks import CallbackAttempt, CallbackDialer
from ivr.queue.config import AcdConfig, AgentConfig, QueueConfig
from ivr.queue.connector import AgentConnector, Offer, OfferResult, context_headers
from ivr.redial import DAY, DailyCounts, RetryPolicy
from ivr.store import Store

log = logging.getLogger(__name__)

AGENT_STATES = ("offline", "available", "break", "ringing", "reserved", "on_call", "wrap_up")
SETTABLE_STATES = ("offline", "available", "break")
MAX_OVERFLOW_HOPS = 5
CALLBACK_STATES = ("callback", "calling_back")
"""Entries of callers who hung up to be called back: waiting their turn (or a retry), being called."""
CALLBACK_GRACE = 30.0
"""Seconds beyond ringing the customer and the agent that a callback attempt may take before it is given up."""


class QueueError(IvrError):
    """A queue operation was asked with an unknown queue, agent or state."""


@dataclass(frozen=True)
class Announce:
    """Tell the waiting caller their position and estimated wait. ``text`` is the English wording (for
    logs and listeners); the call session speaks it in its flow's language from the other fields."""

    text: str
    position: int = field(default=1, compare=False)
    wait: float = field(default=0.0, compare=False)
    """Estimated seconds until an agent takes the call (0 while an agent's phone rings for it)."""
    queue: str = field(default="", compare=False)
    template: str | None = field(default=None, compare=False)
    """The queue's own ``announce: text``, if it has one (else the flow's ``queue_announcement``)."""


@dataclass(frozen=True)
class Connected:
    """An agent answered: bridged calls are joined by the connector; 'refer' calls were transferred."""

    agent: str
    uri: str
    mode: str


@dataclass(frozen=True)
class Overflowed:
    """The caller leaves the queue for ``kind`` ('queue', 'voicemail', 'node') ``target``."""

    kind: str
    target: str
    reason: str


@dataclass(frozen=True)
class Refused:
    """The queue gives the caller back: nobody can take the call here and no overflow covers it.

    ``reason`` is 'no_agents' (no member logged in for the queue's ``no_agents_grace``), 'max_wait' or
    'closed' (outside the queue's hours). The session treats it as a failed transfer (fallback queue, then
    voicemail); ``detail`` says why in words.
    """

    queue: str
    reason: str
    detail: str


@dataclass(frozen=True)
class CallbackOffer:
    """The wait is long: offer the caller to press ``key`` to keep their place and be called back."""

    key: str
    wait: float = 0.0
    queue: str = ""


QueueUpdate = Announce | Connected | Overflowed | Refused | CallbackOffer


@dataclass(frozen=True)
class Ticket:
    """What the session needs when a caller joins a queue."""

    call_id: str
    queue: str
    priority: int
    position: int
    estimated_wait: float
    music_on_hold: str | None
    record: str | None = None
    """The queue records its calls (``record:``): what is said first ('' nothing); None: not recorded."""


@dataclass
class _Agent:
    config: AgentConfig
    state: str = "offline"
    reason: str = ""
    since: float = 0.0
    last_call_end: float | None = None
    missed: int = 0
    call_id: str | None = None
    wrap_until: float = 0.0
    after_call: str | None = None  # state asked for while on a call, applied when it ends
    after_reason: str = ""


@dataclass
class _Entry:
    entry_id: int
    call_id: str
    queue: str
    priority: int
    context: dict[str, Any]
    enqueued_at: float
    seq: int
    state: str = "waiting"  # waiting | offering | connected | abandoned | overflowed | refused | completed
    agent: str | None = None
    answered_at: float | None = None
    offers: dict[str, Offer] = field(default_factory=dict)
    offer_started: dict[str, float] = field(default_factory=dict)
    missed_by: set[str] = field(default_factory=set)
    next_announce: float | None = None
    updates: list[QueueUpdate] = field(default_factory=list)
    hops: int = 0
    unstaffed_since: float | None = None  # when the queue was last seen with no member logged in
    callback_offered: bool = False
    number: str = ""  # callback entries: whom to call back
    attempts: int = 0  # callback attempts made
    due: float = 0.0  # callback entries: not called before this time (retry_after)
    attempt_id: str | None = None  # the callback attempt in progress (or connected)
    attempt_deadline: float = 0.0  # a dialer silent past this gave the attempt up


Listener = Callable[[dict[str, Any]], None]


class Acd:
    """Automatic call distribution over the queues and agents of an :class:`AcdConfig`."""

    def __init__(
        self,
        config: AcdConfig,
        connector: AgentConnector,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        *,
        resume_waiting: bool = False,
        resume_connected: bool = False,
        context_url: Callable[[str], str] | None = None,
        offer_tag: str = "",
        dialer: CallbackDialer | None = None,
        offers_first: bool = False,
    ) -> None:
        self.config = config
        self.connector = connector
        self.store = store
        self.clock = clock
        self.dialer = dialer
        """Places callbacks; None: no queue offers them."""
        self._attempts: dict[str, _Entry] = {}  # callback attempts in progress or connected
        self._callbacks_per_day = DailyCounts(clock)
        self._context_url = context_url
        self._offer_tag = offer_tag  # offer ids of this ACD differ from an earlier one's (cluster leader change)
        self._offers_first = offers_first
        """Send an offer before store writes and listener calls queued ahead of it (never before a cancel or
        another offer): a cluster leader's store writes are database round trips the agent should not wait for."""
        self._lock = threading.RLock()
        self._agents = {name: _Agent(a, since=clock()) for name, a in config.agents.items()}
        self._entries: dict[str, _Entry] = {}  # open entries by call id
        self._offers: dict[str, _Entry] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._rr: dict[str, int] = {}
        self._handle_times: dict[str, deque[float]] = {q: deque(maxlen=20) for q in config.queues}
        self._listeners: list[Listener] = []
        self._dispatching = False
        self._redispatch = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed_updates: dict[str, _Entry] = {}  # overflowed/refused callers whose session has not polled
        self._outbox: deque[tuple[str, Callable[[], None]]] = deque()  # I/O to do after the lock, in order
        self._outbox_lock = threading.Lock()
        self._flushing = False
        self._nesting = threading.local()
        self._unsent: set[str] = set()  # offers withdrawn before the connector was asked to ring them
        if store is not None:
            self._restore(store, resume_waiting, resume_connected)
            self._flush()

    # ----------------------------------------------------------------- public API: calls
    def has_queue(self, name: str) -> bool:
        """Whether ``name`` is a configured queue."""
        return name in self.config.queues

    def enqueue(
        self, call_id: str, queue: str, priority: int | None = None, context: Mapping[str, Any] | None = None
    ) -> Ticket:
        """A caller joins ``queue``; ``priority`` (higher first) defaults to the queue's priority rule."""
        if queue not in self.config.queues:
            raise QueueError(f"unknown queue {queue!r}; queues: {', '.join(self.config.queues)}")
        ctx = dict(context or {})
        q = self.config.queues[queue]
        if priority is None:
            priority = q.priority.priority_for(ctx) if q.priority else 0
        with self._changing():
            old = self._entries.get(call_id)
            if old is not None:
                self._close(old, "overflowed", f"requeued:{queue}")
            entry = self._add_entry(call_id, queue, priority, ctx, self.clock())
            self._emit("enqueued", call_id=call_id, queue=queue, priority=priority)
            self._after_join(entry)
            ticket = Ticket(
                call_id, queue, priority, self._position(entry), self._estimated_wait(entry), q.music_on_hold,
                q.record,
            )
        return ticket

    def abandon(self, call_id: str) -> None:
        """The caller hung up while waiting or ringing (counted as abandoned), or during the agent call."""
        with self._changing():
            entry = self._entries.get(call_id)
            if entry is None or entry.attempt_id is not None or entry.state in CALLBACK_STATES:
                return  # a callback entry outlives the call that asked for it
            if entry.state == "connected":
                self._finish(entry)
                return
            self._withdraw_offers(entry)
            self._close(entry, "abandoned", "abandoned")
            log.info("call %s abandoned queue %s after %.1fs", call_id, entry.queue, self.clock() - entry.enqueued_at)
            self._dispatch()

    def interrupt(self, call_ids: Iterable[str]) -> None:
        """The calls were lost without hanging up (their node died): withdraw their offers and close their
        entries as 'interrupted' (all before anyone is offered again); agents they were connected to go to
        wrap-up."""
        with self._changing():
            self._dispatching = True  # hold offers until every entry is closed
            try:
                for call_id in call_ids:
                    entry = self._entries.get(call_id)
                    if entry is None or entry.attempt_id is not None or entry.state in CALLBACK_STATES:
                        continue
                    if entry.state == "connected":
                        self._finish(entry)
                        continue
                    self._withdraw_offers(entry)
                    self._close(entry, "interrupted", "interrupted")
            finally:
                self._dispatching = False
            self._dispatch()

    def call_finished(self, call_id: str) -> None:
        """The connected agent call ended: the agent goes to wrap-up."""
        with self._changing():
            entry = self._entries.get(call_id)
            if entry is not None and entry.state == "connected" and entry.attempt_id is None:
                self._finish(entry)

    def poll(self, call_id: str) -> list[QueueUpdate]:
        """Updates for the call session since the last poll (announcements, connected, overflowed, refused)."""
        with self._lock:
            entry = self._entries.get(call_id) or self._closed_updates.pop(call_id, None)
            if entry is None:
                return []
            updates, entry.updates = entry.updates, []
            return updates

    def offer_result(self, offer_id: str, result: OfferResult) -> None:
        """The connector's report on an offer (any thread, also from within ``offer``)."""
        with self._changing():
            self._offer_result(offer_id, result)

    def _offer_result(self, offer_id: str, result: OfferResult) -> None:
        entry = self._offers.pop(offer_id, None)
        if entry is None or offer_id not in entry.offers:
            if result is OfferResult.ANSWERED:  # answered too late (ring-all race): drop that leg
                self._later("cancel", lambda: self.connector.cancel(offer_id))
            return
        offer = entry.offers.pop(offer_id)
        entry.offer_started.pop(offer_id, None)
        agent = self._agents[offer.agent]
        now = self.clock()
        if result is OfferResult.ANSWERED:
            self._connect(entry, agent, offer, now)
        else:
            self._missed(entry, agent, result, now)
            if not entry.offers and entry.state == "offering":
                entry.state = "waiting"
                self._save_entry(entry, state="waiting", agent=None)
                self._check_overflow(entry, now)  # before it is offered again: max_wait may be up
        self._dispatch()

    # ----------------------------------------------------------------- public API: callbacks
    def request_callback(self, call_id: str, number: str) -> bool:
        """The waiting caller chose a callback: their entry keeps its place as a callback entry for ``number``.
        False (the caller waits on) when the queue offers no callbacks, the number has had its callbacks for
        the day, or the call is no longer waiting."""
        with self._changing():
            entry = self._entries.get(call_id)
            if entry is None or entry.state not in ("waiting", "offering") or not number:
                return False
            if not self._callback_allowed(entry, number):
                return False
            self._withdraw_offers(entry)
            now = self.clock()
            self._callbacks_per_day.add(number)
            entry.state, entry.number, entry.due, entry.agent = "callback", number, now, None
            self._save_entry(entry, state="callback", agent=None, callback_number=number, callback_requested_at=now,
                             callback_attempts=0, callback_due=now)
            self._history(call_id, "callback_requested", "", "", number)
            self._emit("callback_requested", call_id=call_id, queue=entry.queue, number=number)
            log.info("call %s keeps its place in queue %s for a callback to %s", call_id, entry.queue, number)
            self._dispatch()
            return True

    def add_callback(self, call_id: str, queue: str, number: str, context: Mapping[str, Any] | None = None) -> None:
        """A callback asked for from outside a call (a CRM, the API): a new callback entry for ``number``,
        behind the callers already waiting."""
        if queue not in self.config.queues:
            raise QueueError(f"unknown queue {queue!r}; queues: {', '.join(self.config.queues)}")
        config = self.config.queues[queue].callback
        if config is None:
            raise QueueError(f"queue {queue!r} takes no callbacks; add callback: to it in the queue configuration")
        if self.dialer is None:
            raise QueueError("this server places no callbacks (it runs no SIP dialer)")
        if not number:
            raise QueueError("a callback needs the number to call")
        with self._changing():
            if call_id in self._entries:
                raise QueueError(f"call {call_id!r} is already queued")
            if not self._callbacks_per_day.allows(number, config.max_per_number_per_day):
                raise QueueError(f"{number} has had its {config.max_per_number_per_day} callbacks for today; "
                                 "try again tomorrow")
            ctx = {"caller": number, **dict(context or {})}
            q = self.config.queues[queue]
            priority = q.priority.priority_for(ctx) if q.priority else 0
            entry = self._add_entry(call_id, queue, priority, ctx, self.clock())
            entry.next_announce, entry.callback_offered = None, True
            self._emit("enqueued", call_id=call_id, queue=queue, priority=priority)
            self.request_callback(call_id, number)  # re-entrant: the lock is held

    def callback_result(self, attempt_id: str, result: str) -> None:
        """The dialer's report on a callback attempt (any thread)."""
        if result not in cb.RESULTS:
            raise QueueError(f"unknown callback result {result!r}; one of {', '.join(cb.RESULTS)}")
        with self._changing():
            entry = self._attempts.get(attempt_id)
            if entry is None or entry.attempt_id != attempt_id:
                return
            now = self.clock()
            agent = self._agents.get(entry.agent or "")
            self._history(entry.call_id, "callback_attempt", entry.agent or "", attempt_id, result)
            if result == cb.ANSWERED and entry.state == "calling_back" and agent is not None:
                entry.state, entry.answered_at = "connected", now
                agent.missed = 0
                self._set_state(agent, "on_call", "")
                self._save_entry(entry, state="connected", agent=agent.config.name, answered_at=now)
                self._emit("connected", call_id=entry.call_id, queue=entry.queue, agent=agent.config.name)
                log.info("callback %s: %s connected to %s", attempt_id, entry.number, agent.config.name)
                return
            self._attempts.pop(attempt_id, None)
            entry.attempt_id = None
            if result == cb.ENDED or entry.state == "connected":
                self._finish(entry, "callback_completed")
                return
            if agent is not None and agent.call_id == entry.call_id:
                if result == cb.AGENT_MISSED:
                    self._missed(entry, agent, OfferResult.NO_ANSWER, now)
                else:
                    agent.call_id = None
                    self._history(entry.call_id, "agent_freed", agent.config.name, attempt_id, result)
                    self._free(agent)
            self._callback_failed(entry, result, now)
            self._dispatch()

    def _callback_failed(self, entry: _Entry, result: str, now: float) -> None:
        """Try again after ``retry_after``, or give up once the retries are spent."""
        config = self.config.queues[entry.queue].callback
        policy = RetryPolicy(config.retries, config.retry_after) if config is not None else RetryPolicy()
        entry.agent = None
        due = policy.next_attempt_at(entry.attempts, now)
        if due is None:
            log.warning("callback of call %s to %s failed after %d attempts (last: %s)", entry.call_id, entry.number,
                        entry.attempts, result)
            self._close(entry, "failed", "callback_failed")
            return
        entry.state = "callback"
        entry.due = due
        self._save_entry(entry, state="callback", agent=None, callback_due=entry.due)

    def _callback_allowed(self, entry: _Entry, number: str) -> bool:
        config = self.config.queues[entry.queue].callback
        if config is None or self.dialer is None:
            return False
        return bool(number) and self._callbacks_per_day.allows(number, config.max_per_number_per_day)

    def _maybe_offer_callback(self, entry: _Entry) -> None:
        """Offer a callback once, when the estimated wait reaches the queue's ``offer_after``."""
        config = self.config.queues[entry.queue].callback
        if config is None or entry.callback_offered or entry.state != "waiting":
            return
        number = str(entry.context.get("callback_number") or entry.context.get("caller") or "")
        if not self._callback_allowed(entry, number) or self._refusal_pending(entry):
            return
        wait = self._estimated_wait(entry)
        if wait < config.offer_after:
            return
        entry.callback_offered = True
        entry.updates.append(CallbackOffer(config.key, wait, entry.queue))
        self._emit("callback_offered", call_id=entry.call_id, queue=entry.queue, wait=wait)

    def _start_callback(self, entry: _Entry, agent: _Agent, now: float) -> None:
        """Reserve ``agent`` for the callback entry and ask the dialer to call the customer."""
        q = self.config.queues[entry.queue]
        assert self.dialer is not None
        dialer = self.dialer
        entry.attempts += 1
        attempt_id = f"{entry.call_id}#cb{self._offer_tag}{next(self._ids)}"
        entry.state, entry.agent, entry.attempt_id = "calling_back", agent.config.name, attempt_id
        self._attempts[attempt_id] = entry
        ring = agent.config.ring_timeout or q.ring_timeout
        entry.attempt_deadline = now + 2 * ring + CALLBACK_GRACE
        agent.call_id = entry.call_id
        self._set_state(agent, "reserved", "")
        self._save_entry(entry, state="calling_back", agent=agent.config.name, callback_attempts=entry.attempts)
        url = self._context_url(entry.call_id) if self._context_url else ""
        headers = context_headers(entry.call_id, entry.queue, entry.priority, now - entry.enqueued_at,
                                  {**entry.context, "callback": entry.number}, url)
        attempt = CallbackAttempt(attempt_id, entry.call_id, entry.queue, entry.number, agent.config.name,
                                  agent.config.uri, ring, entry.attempts, headers)
        self._emit("callback_attempt", call_id=entry.call_id, queue=entry.queue, agent=agent.config.name,
                   attempt=entry.attempts)
        self._history(entry.call_id, "agent_reserved", agent.config.name, attempt_id, "callback")
        self._later("callback", lambda: dialer.call_back(attempt, self.callback_result))

    def _free(self, agent: _Agent) -> None:
        """A reserved agent is free again (or goes where they asked to go meanwhile)."""
        state, agent.after_call = agent.after_call or "available", None
        self._set_state(agent, state, agent.after_reason if state == "break" else "")

    # ----------------------------------------------------------------- public API: agents
    def set_agent_state(self, name: str, state: str, reason: str = "") -> None:
        """Log an agent in ('available'), out ('offline') or on 'break' (with a reason)."""
        if state not in SETTABLE_STATES:
            raise QueueError(f"an agent can be set {', '.join(SETTABLE_STATES)}, not {state!r}")
        with self._changing():
            agent = self._agent(name)
            if agent.state in ("on_call", "reserved"):  # applies when the call and its wrap-up end
                agent.after_call = None if state == "available" else state
                agent.after_reason = reason if state == "break" else ""
                return
            agent.after_call = None
            if agent.state == "ringing":
                for entry in list(self._entries.values()):
                    for offer_id, offer in list(entry.offers.items()):
                        if offer.agent == name:
                            self._cancel_offer(entry, offer_id)
                    if entry.state == "offering" and not entry.offers:
                        entry.state = "waiting"
                        self._save_entry(entry, state="waiting", agent=None)
            if state == "available":
                agent.missed = 0
            self._set_state(agent, state, reason if state == "break" else "")
            now = self.clock()
            for entry in self._entries.values():  # the grace runs from the last member logging out
                self._track_staffing(entry, now)
            self._dispatch()

    def agent_names(self) -> list[str]:
        """Configured agent names."""
        return list(self._agents)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every change, in order, once the change is in the store (keep it quick:
        the ACD's other store writes and offers wait for it)."""
        with self._lock:
            self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """Live view: per queue, the waiting callers in order; every agent's state."""
        with self._lock:
            now = self.clock()
            queues: dict[str, Any] = {}
            for name in self.config.queues:
                entries = sorted((e for e in self._entries.values() if e.queue == name), key=self._order)
                queues[name] = [
                    {
                        "call_id": e.call_id,
                        "state": e.state,
                        "priority": e.priority,
                        "wait": round(now - e.enqueued_at, 1),
                        "agent": e.agent or ", ".join(o.agent for o in e.offers.values()) or None,
                    }
                    for e in entries
                ]
            agents = {
                n: {"state": a.state, "reason": a.reason, "since": a.since, "call_id": a.call_id, "missed": a.missed}
                for n, a in self._agents.items()
            }
            return {"queues": queues, "agents": agents, "at": now}

    # ----------------------------------------------------------------- timers
    def tick(self) -> None:
        """Advance timers: ring timeouts, wrap-up ends, announcements, maximum wait; then offer calls."""
        with self._changing():
            now = self.clock()
            for entry in list(self._entries.values()):
                for offer_id, offer in list(entry.offers.items()):
                    if now - entry.offer_started[offer_id] >= offer.ring_timeout:
                        self._later("cancel", functools.partial(self.connector.cancel, offer_id))
                        self._offer_result(offer_id, OfferResult.NO_ANSWER)
            for attempt_id, entry in list(self._attempts.items()):
                if entry.state == "calling_back" and now >= entry.attempt_deadline and self.dialer is not None:
                    dialer = self.dialer
                    log.warning("callback %s: no word from the dialer in time; giving the attempt up", attempt_id)
                    self._later("cancel", functools.partial(dialer.cancel, attempt_id))
                    self.callback_result(attempt_id, cb.FAILED)
            for agent in self._agents.values():
                if agent.state == "wrap_up" and now >= agent.wrap_until:
                    self._end_wrap_up(agent)
            for entry in list(self._entries.values()):
                if entry.state == "waiting":
                    self._check_overflow(entry, now)
                    self._maybe_offer_callback(entry)
                due = entry.next_announce is not None and now >= entry.next_announce
                if due and entry.state in ("waiting", "offering"):
                    self._announce(entry)
            self._dispatch()

    def start(self, interval: float = 0.1) -> None:
        """Run :meth:`tick` in a daemon thread every ``interval`` seconds."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # the ticker must survive a bad connector or store hiccup
                    log.exception("ACD tick failed")

        self._thread = threading.Thread(target=run, name="acd-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the ticker thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    # ----------------------------------------------------------------- internals
    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the lock while state changes; then do the I/O those changes queued (``_later``). Nested
        (a listener changing state from within a change) the I/O waits for the outermost change to end."""
        depth = getattr(self._nesting, "depth", 0)
        self._nesting.depth = depth + 1
        try:
            with self._lock:
                yield
        finally:
            self._nesting.depth = depth
            if depth == 0:
                self._flush()

    def _later(self, what: str, effect: Callable[[], None]) -> None:
        """Queue store or connector work (called under the lock; runs after it, in this order)."""
        with self._outbox_lock:
            self._outbox.append((what, effect))

    def _flush(self) -> None:
        """Carry out the queued I/O in order, one thread at a time (others leave it to that thread)."""
        with self._outbox_lock:
            if self._flushing:
                return
            self._flushing = True
        try:
            while True:
                with self._outbox_lock:
                    if not self._outbox:
                        self._flushing = False
                        return
                    what, effect = self._next_effect()
                try:
                    effect()
                except Exception:  # one failed write or offer must not lose the ones after it
                    log.exception("ACD %s failed", what)
        except BaseException:
            with self._outbox_lock:
                self._flushing = False
            raise

    def _next_effect(self) -> tuple[str, Callable[[], None]]:
        """The next queued effect (under the outbox lock): the oldest, or with ``offers_first`` the first
        offer that only bookkeeping (store writes, listeners) stands before."""
        if self._offers_first:
            for index, (what, _) in enumerate(self._outbox):
                if what == "offer":
                    effect = self._outbox[index]
                    del self._outbox[index]
                    return effect
                if what not in ("store write", "listener"):  # a cancel (or anything else) keeps its turn
                    break
        return self._outbox.popleft()

    def _agent(self, name: str) -> _Agent:
        if name not in self._agents:
            raise QueueError(f"unknown agent {name!r}; add it to the queue configuration")
        return self._agents[name]

    def _emit(self, kind: str, **data: Any) -> None:
        """Tell the listeners, after the store writes queued before (a listener reading the store sees
        the change) and outside the lock."""
        event = {"type": kind, "at": self.clock(), **data}
        for listener in list(self._listeners):
            self._later("listener", functools.partial(self._tell, listener, event))

    @staticmethod
    def _tell(listener: Listener, event: dict[str, Any]) -> None:
        try:
            listener(event)
        except Exception:
            log.exception("ACD listener failed")

    def _add_entry(self, call_id: str, queue: str, priority: int, ctx: dict[str, Any], at: float) -> _Entry:
        entry = _Entry(0, call_id, queue, priority, ctx, at, next(self._seq))
        store = self.store
        if store is not None:  # the row's id is known once written; later writes of the entry follow it

            def add() -> None:
                entry.entry_id = store.add_queue_entry(call_id, queue, priority, at, ctx)

            self._later("store write", add)
        announce = self.config.queues[queue].announce
        if announce is not None:
            entry.next_announce = at + announce.first_after
        self._entries[call_id] = entry
        return entry

    def _after_join(self, entry: _Entry) -> None:
        now = self.clock()
        self._check_overflow(entry, now)
        if entry.state == "waiting":
            self._dispatch()
        self._maybe_offer_callback(entry)
        if entry.state in ("waiting", "offering") and entry.next_announce is not None and now >= entry.next_announce:
            self._announce(entry)

    def _order(self, entry: _Entry) -> tuple[int, float, int]:
        return (-entry.priority, entry.enqueued_at, entry.seq)

    def _position(self, entry: _Entry) -> int:
        ahead = [e for e in self._entries.values()
                 if e.queue == entry.queue and e.state in ("waiting", "offering", *CALLBACK_STATES)]
        return sum(1 for e in ahead if self._order(e) < self._order(entry)) + 1

    def _staffed(self, queue: str) -> list[_Agent]:
        return [self._agents[a.name] for a in self.config.members(queue) if self._agents[a.name].state != "offline"]

    def _estimated_wait(self, entry: _Entry) -> float:
        """Callers ahead (minus free agents) x average handle time / logged-in agents, but never past the
        queue's maximum wait: the caller leaves the queue then, whatever the estimate says."""
        if entry.state == "offering":
            return 0.0  # an agent's phone is ringing for this caller already
        q = self.config.queues[entry.queue]
        times = self._handle_times[entry.queue]
        handle = sum(times) / len(times) if times else q.handle_time
        staffed = max(1, len(self._staffed(entry.queue)))
        free = sum(1 for a in self._staffed(entry.queue) if a.state == "available")
        # callers ahead whose agent's phone rings are as good as served: their agents are the busy ones
        ahead = sum(1 for e in self._entries.values()
                    if e.queue == entry.queue and e.state in ("waiting", "callback")
                    and self._order(e) < self._order(entry))
        if ahead < free:
            return 0.0
        left = max(0.0, q.max_wait - (self.clock() - entry.enqueued_at))
        return min((ahead - free + 1) * handle / staffed, left)

    def _refusal_pending(self, entry: _Entry) -> bool:
        """Nobody is logged in and the queue will give the caller back when the grace ends."""
        return self.config.queues[entry.queue].overflow is None and not self._staffed(entry.queue)

    def _announce(self, entry: _Entry) -> None:
        q = self.config.queues[entry.queue]
        assert q.announce is not None and entry.next_announce is not None
        if self._refusal_pending(entry):
            return  # no wait to promise: an agent logging in now makes it due at the next tick
        wait = self._estimated_wait(entry)
        position = self._position(entry)
        text = queue_announcement(PROMPT_DEFAULTS["en"], q.announce.text, position, wait, entry.queue)
        entry.updates.append(Announce(text, position, wait, entry.queue, q.announce.text))
        entry.next_announce += q.announce.every
        now = self.clock()
        if entry.next_announce <= now:  # after a long pause, don't speak a backlog
            entry.next_announce = now + q.announce.every
        self._emit("announce", call_id=entry.call_id, queue=entry.queue, text=text)

    def _check_overflow(self, entry: _Entry, now: float) -> None:
        """Move the caller on when the queue is closed, the wait is over or nobody is logged in: to the
        overflow target when the queue's overflow rule covers the reason, else back to the session
        (:class:`Refused`)."""
        q = self.config.queues[entry.queue]
        unstaffed_for = self._track_staffing(entry, now)  # None while a member is logged in
        staffed = unstaffed_for is None
        waited_out = now - entry.enqueued_at >= q.max_wait
        closed = not q.is_open(now)
        when = q.overflow.when if q.overflow is not None else frozenset()
        reason = ""
        if "closed" in when and closed:
            reason = "closed"
        elif "max_wait" in when and waited_out:
            reason = "max_wait"
        elif "no_agents" in when and not staffed:
            reason = "no_agents"
        if not reason:
            if closed:
                self._refuse(entry, "closed", "the queue is closed (outside its hours)")
            elif waited_out:
                self._refuse(entry, "max_wait", f"nobody took the call within the maximum wait of {q.max_wait:g} s")
            elif q.overflow is None and unstaffed_for is not None and unstaffed_for >= q.no_agents_grace:
                self._refuse(entry, "no_agents", "no agent who can take its calls is logged in")
            return
        assert q.overflow is not None
        target = q.overflow
        log.info(
            "call %s overflows queue %s to %s %s (%s)", entry.call_id, entry.queue, target.kind, target.target, reason
        )
        self._close(entry, "overflowed", f"overflow:{reason}")
        if target.kind == "queue" and entry.hops < MAX_OVERFLOW_HOPS:
            new = self._add_entry(entry.call_id, target.target, entry.priority, entry.context, now)
            new.hops = entry.hops + 1
            new.updates = entry.updates  # undelivered announcements still reach the session
            self._closed_updates.pop(entry.call_id, None)
            self._emit(
                "enqueued", call_id=new.call_id, queue=new.queue, priority=new.priority, overflow_from=entry.queue
            )
            self._after_join(new)
        else:
            entry.updates.append(Overflowed(target.kind, target.target, reason))

    def _track_staffing(self, entry: _Entry, now: float) -> float | None:
        """Seconds the entry's queue has had no member logged in, or None while one is."""
        if self._staffed(entry.queue):
            entry.unstaffed_since = None
            return None
        if entry.unstaffed_since is None:
            entry.unstaffed_since = now
        return now - entry.unstaffed_since

    def _refuse(self, entry: _Entry, reason: str, detail: str) -> None:
        log.warning("call %s leaves queue %s without an agent: %s", entry.call_id, entry.queue, detail)
        self._close(entry, "refused", f"refused:{reason}")
        entry.updates.append(Refused(entry.queue, reason, detail))

    def _pick(self, entry: _Entry, reserved: set[str]) -> list[_Agent]:
        q = self.config.queues[entry.queue]
        members = self.config.members(entry.queue)
        free = [self._agents[m.name] for m in members if self._agents[m.name].state == "available"]
        free = [a for a in free if a.config.name not in reserved]
        if not free:
            return []
        fresh = [a for a in free if a.config.name not in entry.missed_by]
        if not fresh:  # everyone free has missed this caller once: give them another chance
            entry.missed_by.clear()
            fresh = free
        if q.strategy == "ring-all":
            return fresh
        if q.strategy == "round-robin":
            order = [m.name for m in members]
            start = self._rr.get(q.name, -1)
            ranked = sorted(fresh, key=lambda a: (order.index(a.config.name) - start - 1) % len(order))
            self._rr[q.name] = order.index(ranked[0].config.name)
            return [ranked[0]]
        return [min(fresh, key=lambda a: a.since)]  # longest-idle: longest in 'available'

    def _dispatch(self) -> None:
        if self._dispatching:
            self._redispatch = True
            return
        self._dispatching = True
        try:
            while True:
                self._redispatch = False
                self._dispatch_once()
                if not self._redispatch:
                    break
        finally:
            self._dispatching = False

    def _dispatch_once(self) -> None:
        now = self.clock()
        waiting = sorted((e for e in self._entries.values()
                          if e.state == "waiting" or (e.state == "callback" and e.due <= now)), key=self._order)
        reserved: set[str] = set()
        for entry in waiting:
            agents = self._pick(entry, reserved)
            if not agents:
                continue
            if entry.state == "callback":
                if self.dialer is None:
                    continue
                reserved.add(agents[0].config.name)
                self._start_callback(entry, agents[0], now)
                continue
            q = self.config.queues[entry.queue]
            entry.state = "offering"
            self._save_entry(entry, state="offering", agent=agents[0].config.name if len(agents) == 1 else None)
            for agent in agents:
                reserved.add(agent.config.name)
                offer = self._make_offer(entry, agent, q, now)
                entry.offers[offer.offer_id] = offer
                entry.offer_started[offer.offer_id] = now
                self._offers[offer.offer_id] = entry
                agent.call_id = entry.call_id
                self._set_state(agent, "ringing", "")
                self._emit("offer", call_id=entry.call_id, queue=entry.queue, agent=agent.config.name)
            for offer in list(entry.offers.values()):
                self._later("offer", functools.partial(self._send_offer, offer))
            for offer in list(entry.offers.values()):  # after the offers: history is not on their way
                self._history(entry.call_id, "agent_reserved", offer.agent, offer.offer_id, "offered")

    def _send_offer(self, offer: Offer) -> None:
        """Ask the connector to ring (outside the lock), unless the offer was withdrawn meanwhile (another
        agent of a ring-all queue answered at once, the caller hung up)."""
        with self._lock:
            live = offer.offer_id in self._offers
        if not live:
            self._unsent.add(offer.offer_id)
            return
        self.connector.offer(offer, self.offer_result)

    def _send_cancel(self, offer_id: str) -> None:
        if offer_id in self._unsent:
            self._unsent.discard(offer_id)
            return
        self.connector.cancel(offer_id)

    def _make_offer(self, entry: _Entry, agent: _Agent, q: QueueConfig, now: float) -> Offer:
        offer_id = f"{entry.call_id}#{self._offer_tag}{next(self._ids)}"
        url = self._context_url(entry.call_id) if self._context_url else ""
        headers = context_headers(
            entry.call_id, entry.queue, entry.priority, now - entry.enqueued_at, entry.context, url
        )
        timeout = agent.config.ring_timeout or q.ring_timeout
        return Offer(
            offer_id, entry.call_id, entry.queue, agent.config.name, agent.config.uri, q.connection, timeout, headers
        )

    def _cancel_offer(self, entry: _Entry, offer_id: str) -> None:
        offer = entry.offers.pop(offer_id)
        entry.offer_started.pop(offer_id, None)
        self._offers.pop(offer_id, None)
        self._later("cancel", lambda: self._send_cancel(offer_id))
        agent = self._agents[offer.agent]
        if agent.state == "ringing" and agent.call_id == entry.call_id:
            agent.call_id = None
            self._set_state(agent, "available", "")
        self._history(entry.call_id, "agent_freed", offer.agent, offer_id, "cancelled")

    def _withdraw_offers(self, entry: _Entry) -> None:
        for offer_id in list(entry.offers):
            self._cancel_offer(entry, offer_id)

    def _connect(self, entry: _Entry, agent: _Agent, offer: Offer, now: float) -> None:
        self._withdraw_offers(entry)  # ring-all: the others stop ringing
        entry.state, entry.agent, entry.answered_at = "connected", agent.config.name, now
        agent.missed, agent.call_id = 0, entry.call_id
        self._set_state(agent, "on_call", "")
        self._save_entry(entry, state="connected", agent=agent.config.name, answered_at=now)
        entry.updates.append(Connected(agent.config.name, offer.uri, offer.mode))
        log.info("call %s connected to %s after %.1fs", entry.call_id, agent.config.name, now - entry.enqueued_at)
        self._emit("connected", call_id=entry.call_id, queue=entry.queue, agent=agent.config.name)

    def _missed(self, entry: _Entry, agent: _Agent, result: OfferResult, now: float) -> None:
        self._history(entry.call_id, "agent_freed", agent.config.name, "", result.value)
        entry.missed_by.add(agent.config.name)
        agent.call_id = None
        agent.missed += 1
        limit = self.config.max_missed_offers
        if agent.missed >= limit:
            reason = f"missed {agent.missed} offered calls in a row (last: {result.value})"
            log.warning("agent %s set on break: %s", agent.config.name, reason)
            self._set_state(agent, "break", reason)
        else:
            self._set_state(agent, "available", "")
        self._emit("missed", call_id=entry.call_id, agent=agent.config.name, result=result.value)

    def _finish(self, entry: _Entry, outcome: str = "completed") -> None:
        now = self.clock()
        q = self.config.queues[entry.queue]
        if entry.answered_at is not None:
            self._handle_times[entry.queue].append(now - entry.answered_at)
        self._close(entry, "completed", outcome)
        agent = self._agents.get(entry.agent or "")
        if agent is not None and agent.call_id == entry.call_id:
            self._history(entry.call_id, "agent_freed", agent.config.name, "", "completed")
            agent.call_id, agent.last_call_end = None, now
            agent.wrap_until = now + q.wrap_up
            self._set_state(agent, "wrap_up", "")
            if q.wrap_up <= 0:
                self._end_wrap_up(agent)
        self._dispatch()

    def _end_wrap_up(self, agent: _Agent) -> None:
        state, agent.after_call = agent.after_call or "available", None
        self._set_state(agent, state, agent.after_reason if state == "break" else "")
        self._dispatch()

    def _close(self, entry: _Entry, state: str, outcome: str) -> None:
        now = self.clock()
        entry.state = state
        self._entries.pop(entry.call_id, None)
        if state in ("overflowed", "refused"):
            self._closed_updates[entry.call_id] = entry
            while len(self._closed_updates) > 1000:
                self._closed_updates.pop(next(iter(self._closed_updates)))
        self._save_entry(entry, state=state, ended_at=now, outcome=outcome)
        self._emit(state, call_id=entry.call_id, queue=entry.queue, wait=now - entry.enqueued_at)

    def _set_state(self, agent: _Agent, state: str, reason: str) -> None:
        agent.state, agent.reason, agent.since = state, reason, self.clock()
        self._save_agent(agent)
        self._emit("agent", agent=agent.config.name, state=state, reason=reason)

    def _save_agent(self, agent: _Agent) -> None:
        store = self.store
        if store is not None:
            row = (agent.config.name, agent.state, agent.reason, agent.since, agent.last_call_end, agent.missed,
                   agent.call_id)  # as it is now, whatever changes before the write
            self._later("store write", lambda: store.save_agent_state(*row))

    def _history(self, call_id: str, kind: str, agent: str, offer_id: str, result: str) -> None:
        """An agent reserved for (offered) or freed from a call, in the call's events: the store's record of
        who was tied to which call when (reports, audits: an agent is never reserved twice at once)."""
        store = self.store
        if store is not None:
            at, data = self.clock(), {"agent": agent, "offer": offer_id, "result": result}
            self._later("store write", lambda: store.add_event(call_id, at, kind, data))

    def _save_entry(self, entry: _Entry, **fields: Any) -> None:
        store = self.store
        if store is not None:
            self._later("store write", lambda: store.update_queue_entry(entry.entry_id, **fields))

    def _restore(self, store: Store, resume_waiting: bool, resume_connected: bool) -> None:
        """Agents and entries from the store. ``resume_waiting``: waiting callers wait on (offers made before
        are void); ``resume_connected``: callers talking to an agent stay connected (a cluster's new leader:
        the calls live on in other processes); otherwise those calls belonged to the previous process."""
        now = self.clock()
        rows = store.open_queue_entries()
        talking = {r["agent"]: r for r in rows if resume_connected and r["state"] == "connected" and r["agent"]}
        for name, row in store.load_agent_states().items():
            agent = self._agents.get(name)
            if agent is None:
                continue
            state = row["state"]
            if name in talking:
                state, agent.call_id = "on_call", talking[name]["call_id"]
            elif state in ("ringing", "reserved", "on_call", "wrap_up"):
                state = "available"  # the call it was on belonged to the previous process
            agent.state, agent.reason, agent.since = (
                state,
                row["reason"] if state == "break" else "",
                row["state_since"],
            )
            agent.last_call_end, agent.missed = row["last_call_end"], row["missed_offers"]
            self._save_agent(agent)
        since = now - now % DAY
        self._callbacks_per_day.load(store.callback_counts_since(since))
        for row in rows:
            if row["state"] in CALLBACK_STATES and row["queue"] in self.config.queues and row["callback_number"]:
                self._restore_callback(store, row, now)
                continue
            connected = row["state"] == "connected"
            resume = resume_connected and row["agent"] in self._agents if connected else resume_waiting
            if row["queue"] in self.config.queues and resume:
                entry = _Entry(row["id"], row["call_id"], row["queue"], row["priority"], dict(row["context"] or {}),
                               row["enqueued_at"], next(self._seq))  # fmt: skip
                self._entries[entry.call_id] = entry
                if connected:
                    entry.state, entry.agent, entry.answered_at = "connected", row["agent"], row["answered_at"]
                else:
                    store.update_queue_entry(entry.entry_id, state="waiting", agent=None)
            else:
                outcome = "completed" if row["state"] == "connected" else "interrupted"
                store.update_queue_entry(row["id"], state=outcome, ended_at=now, outcome=outcome)
        log.info("ACD restored %d agents and %d waiting callers", len(self._agents), len(self._entries))

    def _restore_callback(self, store: Store, row: Mapping[str, Any], now: float) -> None:
        """A callback entry outlives the process: it keeps its place (an attempt in progress is tried again)."""
        entry = _Entry(row["id"], row["call_id"], row["queue"], row["priority"], dict(row["context"] or {}),
                       row["enqueued_at"], next(self._seq))  # fmt: skip
        entry.state, entry.number, entry.callback_offered = "callback", row["callback_number"], True
        entry.attempts = row["callback_attempts"] or 0
        entry.due = row["callback_due"] if row["callback_due"] is not None else now
        self._entries[entry.call_id] = entry
        if row["state"] != "callback":
            store.update_queue_entry(entry.entry_id, state="callback", agent=None)
