"""The per-call flow interpreter: events in, actions out, no I/O.

One ``CallInterpreter`` per call. ``start()`` returns the first actions (prompts and a ``Listen``);
each caller event the session delivers goes to ``handle()``, which returns the next actions. Nothing that
goes wrong inside a flow (a bad template, a failed HTTP call without a failure path) escapes ``handle()``:
the call goes to the flow's ``on_error`` node, or apologises and transfers to the fallback queue.

Answers to a ``Listen``: exactly one of ``Transcript`` (final), ``DtmfDigit`` (all keys of one answer
in one event, e.g. ``DtmfDigit("1234")``; the session collects them), ``NoInput`` or ``Hangup``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ivr import events
from ivr.errors import IvrError
from ivr.flow.actions import (
    FlowAction,
    Hangup,
    HttpRequest,
    KnowledgeLookup,
    Listen,
    Record,
    RecordingControl,
    Say,
    Transfer,
)
from ivr.flow.knowledge import Knowledge, KnowledgeEntry
from ivr.flow.loader import normalize_utterance
from ivr.flow.prompts import default_prompts
from ivr.flow.schema import (
    AnswerNode,
    AskNode,
    BranchNode,
    Confirmation,
    Flow,
    GotoNode,
    HangupNode,
    HttpNode,
    Node,
    RecordingNode,
    RecordNode,
    ReturnNode,
    SayNode,
    SetNode,
    SubflowNode,
    TransferNode,
    flow_fallback_queue,
)
from ivr.flow.templates import Template
from ivr.nlu.garbled import looks_garbled
from ivr.nlu.slots import parse_dtmf_slot, parse_slot, parse_yes_no
from ivr.nlu.types import IntentClassifier, IntentMatch

log = logging.getLogger(__name__)


def default_prompt(language: str, which: str) -> str:
    """A built-in system prompt (no_input, no_match, give_up, confirm_retry, confirm_no, error...) in a
    flow language (English when the language has none); see ``ivr.flow.prompts``."""
    return default_prompts(language)[which]


YES_NO_KEYS = {"1": True, "2": False}
MENU_QUESTION_WORDS = 3
"""A menu's no-match is logged as an unanswered question (``on_question``) only from this many words."""


class FlowRuntimeError(IvrError):
    """Something in a flow failed during a call (the call itself goes to its error fallback)."""


@dataclass
class _Frame:
    """One running flow: the main flow, or a sub-flow and where to continue in its caller."""

    flow: Flow
    classifier: IntentClassifier | None
    return_to: str | None = None
    examples: dict[str, str] = field(default_factory=dict)


def _example_index(flow: Flow) -> dict[str, str]:
    index: dict[str, str] = {}
    for intent, examples in flow.intents.items():
        for example in examples:
            index.setdefault(normalize_utterance(example), intent)
    return index


SECRET_MASK = "****"


def _declared_sensitivity(flow: Flow, seen: set[int] | None = None) -> dict[str, str]:
    """What a flow and its sub-flows declare ``sensitive`` (the calling flow's word wins)."""
    seen = seen if seen is not None else set()
    seen.add(id(flow))
    out: dict[str, str] = {}
    for sub in flow.subflows():
        if id(sub) not in seen:
            out.update(_declared_sensitivity(sub, seen))
    out.update(flow.sensitive)
    return out


class CallInterpreter:
    """Runs one call through a flow. Not thread-safe: the call session calls it from one thread.

    ``call_vars`` seeds the variables (``caller``, ``called``, ``call_id`` and any extra such as
    ``api_base``; they override the flow's ``variables:`` defaults). ``classifier`` overrides the flow's
    own classifier (sub-flows keep theirs). ``hours`` answers ``open('name')`` in templates (see
    :class:`ivr.hours.OpenCheck`); without it ``open`` fails the call's step with a clear error.
    """

    def __init__(self, flow: Flow, call_vars: Mapping[str, object] | None = None,
                 classifier: IntentClassifier | None = None, max_steps: int = 200,
                 hours: Callable[[str], bool] | None = None) -> None:
        self.flow = flow
        self.max_steps = max_steps
        self.finished = False
        self.outcome = ""
        main = _Frame(flow, classifier or flow.classifier, None, _example_index(flow))
        self._stack: list[_Frame] = [main]
        call_vars = dict(call_vars or {})
        self._slots: dict[str, object] = {}
        self._vars: dict[str, object] = dict(flow.variables)
        self._vars.update(call_vars)
        self._vars.update({
            "caller": call_vars.get("caller", ""), "called": call_vars.get("called", ""),
            "call_id": call_vars.get("call_id", ""), "flow": flow.name, "last_intent": None,
            "last_confidence": 0.0, "last_text": "", "turns": 0, "slots": self._slots, "http_status": 0,
            "http_error": "", "error": "", "last_answer": None,
            "outbound": bool(call_vars.get("outbound", False)),  # True on a call the server placed (a CRM's)
        })
        self._builtin = set(self._vars) - set(flow.variables) - (set(call_vars) - {"caller", "called", "call_id"})
        if hours is not None:
            self._vars["open"] = hours  # shadows the template environment's open(), which knows no hours
            self._builtin.add("open")
        self._path: list[str] = []
        self._utterances: list[dict[str, object]] = []
        self._out: list[FlowAction] = []
        self._wait: str | None = None
        self._node: Node | None = None
        self._no_input = 0
        self._no_match = 0
        self._confirm_misses = 0
        self._heard: events.Transcript | None = None  # the last spoken answer (None when keyed in)
        self._pending: object = None
        self._started = False
        self._in_error = False
        self._max_turns_hit = False
        self._transfer: dict[str, object] | None = None
        self._looked_up: tuple[int, str, KnowledgeLookup] | None = None  # (knowledge id, text, result)
        # Configured values (flow defaults, --var) are not the caller's: not sensitive unless declared.
        self._sensitive = {name: "none" for name in (set(flow.variables) | set(call_vars)) - set(self._builtin)}
        self._sensitive.update(_declared_sensitivity(flow))

    # ---- public ------------------------------------------------------------------------------------

    def start(self) -> list[FlowAction]:
        """Begin the call at the flow's start node; returns the first actions."""
        if self._started:
            return []
        self._started = True
        return self._guarded(lambda: self._run(self.flow.start))

    def handle(self, event: events.ControlEvent) -> list[FlowAction]:
        """Feed one event from the session; returns what to do next (empty when nothing changes)."""
        if self.finished or not self._started:
            return []
        if isinstance(event, events.Hangup):
            self.finished, self.outcome, self._wait = True, "caller_hangup", None
            return []
        return self._guarded(lambda: self._dispatch(event))

    def resume_at(self, node: str) -> list[FlowAction]:
        """Continue the call at ``node`` of the main flow after it ended in a transfer that could not happen
        (e.g. a queue overflowing to a flow node)."""
        if node not in self.flow.nodes:
            return self._guarded(lambda: self._fail(FlowRuntimeError(f"no node '{node}' to resume at")))
        del self._stack[1:]
        self.finished, self.outcome, self._wait = False, "", None
        return self._guarded(lambda: self._run(node))

    @property
    def current_node(self) -> str | None:
        """The node waiting for the caller (or for an HTTP reply / recording), if any."""
        return self._node.name if self._node is not None and self._wait else None

    @property
    def variables(self) -> dict[str, object]:
        """A copy of all variables templates can use."""
        return dict(self._vars)

    def context(self) -> dict[str, object]:
        """Everything learned so far, for the agent's screen and the call record."""
        user_vars = {k: v for k, v in self._vars.items() if k not in self._builtin}
        return {
            "flow": self.flow.name,
            "call_id": self._vars.get("call_id", ""),
            "caller": self._vars.get("caller", ""),
            "called": self._vars.get("called", ""),
            "node": self.current_node,
            "path": list(self._path),
            "intent": self._vars.get("last_intent"),
            "confidence": self._vars.get("last_confidence"),
            "last_text": self._vars.get("last_text"),
            "slots": dict(self._slots),
            "variables": user_vars,
            "turns": self._vars.get("turns"),
            "utterances": [dict(u) for u in self._utterances],
            "outcome": self.outcome,
            "error": self._vars.get("error") or None,
            "sensitive": dict(self._sensitive),
        }

    # ---- running nodes -----------------------------------------------------------------------------

    def _guarded(self, step: object) -> list[FlowAction]:
        self._out = []
        try:
            step()  # type: ignore[operator]
        except Exception as exc:
            self._fail(exc)
        out, self._out = self._out, []
        return out

    @property
    def _frame(self) -> _Frame:
        return self._stack[-1]

    def _emit(self, action: FlowAction) -> None:
        self._out.append(action)

    def _run(self, name: str | None) -> None:
        """Enter nodes from ``name`` until one waits for the caller (or the call ends)."""
        steps = 0
        while name and not self.finished:
            steps += 1
            if steps > self.max_steps:
                raise FlowRuntimeError(f"passed {self.max_steps} nodes without waiting for the caller at "
                                       f"'{name}'; look for a loop of goto/set/branch nodes")
            node = self._frame.flow.nodes.get(name)
            if node is None:
                raise FlowRuntimeError(f"node '{name}' does not exist in flow '{self._frame.flow.name}'")
            self._wait = None
            self._node = node
            self._path.append(name if len(self._stack) == 1 else f"{self._frame.flow.name}/{name}")
            name = self._enter(node)

    def _enter(self, node: Node) -> str | None:
        v = self._vars
        if isinstance(node, SayNode):
            self._say(node.text, node.audio, node.barge_in)
            return node.next
        if isinstance(node, AskNode):
            return self._enter_ask(node)
        if isinstance(node, AnswerNode):
            return self._enter_answer(node)
        if isinstance(node, SetNode):
            for key, value in node.values.items():
                v[key] = value.render(v)
            return node.next
        if isinstance(node, BranchNode):
            for case in node.cases:
                if case.condition.value(v):
                    return case.goto
            return node.otherwise
        if isinstance(node, GotoNode):
            return node.target
        if isinstance(node, HttpNode):
            self._emit(HttpRequest(
                method=node.method, url=node.url.text(v),
                headers={k: t.text(v) for k, t in node.headers.items()},
                json=node.json.render(v) if node.json is not None else None,
                timeout=node.timeout, retries=node.retries,
                filler=node.filler.text(v) if node.filler else None, filler_after=node.filler_after))
            self._wait = "http"
            return None
        if isinstance(node, RecordNode):
            self._say(node.prompt, node.audio, False)
            self._emit(Record(max_seconds=node.max_seconds, end_silence=node.end_silence,
                              terminator=node.terminator, beep=node.beep))
            self._wait = "record"
            return None
        if isinstance(node, RecordingNode):
            self._emit(RecordingControl(pause=node.pause))
            return node.next
        if isinstance(node, TransferNode):
            self._say(node.say, None, False)
            extra = {k: value.render(v) for k, value in node.context.items()}
            queue = node.queue.text(v) if node.queue else None
            uri = node.uri.text(v) if node.uri else None
            self._finish_transfer(queue, uri, extra, node.after_agent)
            return None
        if isinstance(node, HangupNode):
            self._say(node.say, None, False)
            self._emit(Hangup(node.reason))
            self.finished, self.outcome = True, node.reason
            return None
        if isinstance(node, SubflowNode):
            assert node.flow is not None
            for key, default in node.flow.variables.items():
                v.setdefault(key, default)
            self._stack.append(_Frame(node.flow, node.flow.classifier, node.next, _example_index(node.flow)))
            return node.flow.start
        if isinstance(node, ReturnNode):
            if len(self._stack) == 1:
                self._emit(Hangup("completed"))
                self.finished, self.outcome = True, "completed"
                return None
            frame = self._stack.pop()
            return frame.return_to
        raise FlowRuntimeError(f"node type {node.kind!r} cannot run")

    def _enter_answer(self, node: AnswerNode) -> str | None:
        """Say the knowledge file's answer to the question, or go to ``otherwise`` when there is none."""
        knowledge = self._frame.flow.knowledge
        if knowledge is None:
            raise FlowRuntimeError(f"answer node '{node.name}': the flow has no knowledge file")
        question = node.question.text(self._vars) if node.question else str(self._vars.get("last_text") or "")
        lookup = self._lookup(knowledge, question, node.name)
        self._emit(lookup)
        self._vars["last_answer"] = lookup.entry
        entry = knowledge.entries.get(lookup.entry) if lookup.entry else None
        if entry is None:
            return node.otherwise
        self._emit(Say(text=entry.answer.text(self._vars), barge_in=True))
        return entry.follow_up or node.next

    def _lookup(self, knowledge: Knowledge, question: str, node: str) -> KnowledgeLookup:
        """The entry that answers ``question`` (None below the knowledge threshold); the last result is
        reused, so a menu's ``on_question`` and the answer node it leads to look up once."""
        text = question.strip()
        if self._looked_up is not None and self._looked_up[:2] == (id(knowledge), text):
            found = self._looked_up[2]
            return KnowledgeLookup(text, node, found.entry, found.best, found.confidence)
        exact: KnowledgeEntry | None = knowledge.entries.get(knowledge.exact.get(normalize_utterance(text), ""))
        if exact is not None:
            result = KnowledgeLookup(text, node, exact.name, exact.name, 1.0)
        elif knowledge.matcher is None or not text or looks_garbled(text):
            result = KnowledgeLookup(text, node, None, None, 0.0)
        else:
            match = knowledge.matcher.classify(text)
            best = match.ranked[0][0] if match.ranked else None
            result = KnowledgeLookup(text, node, match.intent, best, round(match.confidence, 4))
        self._looked_up = (id(knowledge), text, result)
        return result

    def _say(self, text: Template | None, audio: str | None, barge_in: bool) -> None:
        if text is None and audio is None:
            return
        self._emit(Say(text=text.text(self._vars) if text else "", audio=audio, barge_in=barge_in))

    def _finish_transfer(self, queue: str | None, uri: str | None, extra: dict[str, object],
                         after_agent: str | None = None) -> None:
        self.finished, self.outcome, self._wait = True, "transfer", None
        self._transfer = {"queue": queue, "uri": uri}
        context = self.context()
        context.update(extra)
        self._emit(Transfer(queue=queue, uri=uri, context=context, after_agent=after_agent))

    # ---- asking ------------------------------------------------------------------------------------

    def _enter_ask(self, node: AskNode) -> str | None:
        main = self.flow.globals
        if not self._max_turns_hit and int(self._vars["turns"]) >= main.max_turns:  # type: ignore[call-overload]
            self._max_turns_hit = True
            del self._stack[1:]  # the target is a node of the main flow
            if main.max_turns_target:
                return main.max_turns_target
            self._fallback(f"more than {main.max_turns} turns", self.flow.prompt("give_up"))
            return None
        self._no_input = self._no_match = 0
        self._pending = None
        self._prompt(node, None)
        return None

    def _prompt(self, node: AskNode, lead: Template | str | None, wait: str = "ask") -> None:
        """Say ``lead`` (a retry prompt) and/or the question, then listen."""
        if lead is not None:
            text = lead.text(self._vars) if isinstance(lead, Template) else lead
            self._emit(Say(text=text, barge_in=node.barge_in))
        if lead is None or node.repeat_prompt:
            self._say(node.prompt, node.audio, node.barge_in)
        self._listen(node)
        self._wait = wait

    def _listen(self, node: AskNode, yes_no: bool = False) -> None:
        slot = "yes_no" if yes_no else node.slot
        if slot == "digits":
            max_digits = node.max_digits or 20
        elif slot == "number":
            top = node.max_value if node.max_value is not None and node.max_value >= 0 else 999999
            max_digits = len(str(int(top)))
        elif slot == "yes_no":
            max_digits = 1
        else:
            max_digits = max((len(k) for k in node.dtmf), default=1)
        self._emit(Listen(
            speech=node.input in ("both", "speech") or yes_no,
            dtmf=(node.input in ("both", "dtmf") and slot != "text") or yes_no,
            grammar=None if yes_no else node.grammar,
            no_input_timeout=node.timeout, end_silence=node.end_silence, max_speech=node.max_speech,
            dtmf_max_digits=max_digits, dtmf_terminator=node.terminator,
            dtmf_inter_digit_timeout=node.inter_digit_timeout,
            sensitive=node.sensitive if node.sensitive in ("card", "secret") and not yes_no else ""))
        self._vars["turns"] = int(self._vars["turns"]) + 1  # type: ignore[call-overload]

    def _dispatch(self, event: events.ControlEvent) -> None:
        node = self._node
        if self._wait == "http" and isinstance(event, events.HttpResult) and isinstance(node, HttpNode):
            self._http_result(node, event)
        elif self._wait == "record" and isinstance(event, events.RecordingFinished) and isinstance(node, RecordNode):
            self._vars[node.save_as] = {"path": event.path, "duration": event.duration}
            self._run(node.next)
        elif self._wait in ("ask", "confirm") and isinstance(node, AskNode):
            if isinstance(event, events.Transcript) and not event.final:
                return
            if not isinstance(event, events.Transcript | events.DtmfDigit | events.NoInput):
                return
            if self._wait == "ask":
                self._answer(node, event)
            else:
                self._confirm_answer(node, event)

    def _answer(self, node: AskNode, event: events.Transcript | events.DtmfDigit | events.NoInput) -> None:
        if isinstance(event, events.NoInput):
            self._note(node, None, None, None, None)
            self._miss(node, "no_input")
            return
        if isinstance(event, events.DtmfDigit):
            self._heard = None
            keys = event.digit.replace(node.terminator, "").strip()
            if node.slot is None:
                intent = node.dtmf.get(keys)
                self._note(node, None, keys, intent, 1.0 if intent else 0.0)
                if intent is None and keys and keys == self._agent_dtmf():
                    self._to_agent()
                    return
                self._choose(node, intent)
                return
            value = self._valid(node, parse_dtmf_slot(node.slot, keys))
            self._note(node, None, keys, None, None, value)
            self._accept(node, value)
            return
        text = event.text.strip()
        self._vars["last_text"] = SECRET_MASK if node.sensitive == "secret" and text else text
        self._heard = event
        if text and event.confidence < self._frame.flow.speech.min_confidence:
            # The recognizer was unsure of what it heard: ask again rather than act on a guess.
            self._note(node, text, None, None, 0.0)
            self._miss(node, "no_match")
            return
        if node.slot is None:
            intent, confidence = self._pick(node, self._classify(self._frame, text))
            knowledge = self._frame.flow.knowledge
            lookup = self._lookup(knowledge, text, node.name) if node.on_question and knowledge else None
            if lookup is not None and lookup.entry is not None and (intent is None or lookup.confidence > confidence):
                self._note(node, text, None, None, lookup.confidence)
                self._utterances[-1]["question"] = lookup.entry
                self._run(node.on_question)
                return
            self._note(node, text, None, intent, confidence)
            if intent is None and self._agent_requested(text):
                self._to_agent()
                return
            self._choose(node, intent)
            if (intent is None and lookup is not None and knowledge is not None and knowledge.matcher is not None
                    and len(text.split()) >= MENU_QUESTION_WORDS):
                self._emit(lookup)  # a question the menu was open to but nothing answers: for the report
            return
        value = self._valid(node, parse_slot(node.slot, text) if text else None)
        self._note(node, text, None, None, None, value)
        if value is None and node.slot != "text" and text and self._agent_requested(text):
            self._to_agent()
            return
        self._accept(node, value)

    def _note(self, node: AskNode, text: str | None, keys: str | None, intent: str | None,
              confidence: float | None, value: object = None) -> None:
        """Remember one caller turn (for context and templates)."""
        entry: dict[str, object] = {"node": node.name}
        if node.sensitive == "secret":  # the value is the flow's to use, never to remember in the context
            text, keys = (None if text is None else SECRET_MASK), (None if keys is None else SECRET_MASK)
            value = None if value is None else SECRET_MASK
        if text is not None:
            entry["text"] = text
        if keys is not None:
            entry["dtmf"] = keys
        if text is None and keys is None:
            entry["no_input"] = True
        if node.slot is None and (text is not None or keys is not None):
            entry["intent"], entry["confidence"] = intent, round(confidence or 0.0, 3)
            self._vars["last_intent"], self._vars["last_confidence"] = intent, confidence or 0.0
        if node.slot is not None and value is not None:
            entry["value"] = value
        self._utterances.append(entry)

    def _choose(self, node: AskNode, intent: str | None) -> None:
        if intent is not None and intent in node.on:
            self._run(node.on[intent])
        elif intent is not None and intent == self._agent_intent():
            self._to_agent()
        else:
            self._miss(node, "no_match")

    def _classify(self, frame: _Frame, text: str) -> IntentMatch:
        intent = frame.examples.get(normalize_utterance(text))
        if intent is not None:
            return IntentMatch(intent, 1.0, ((intent, 1.0),))
        if frame.classifier is None or not text or looks_garbled(text):
            return IntentMatch(None, 0.0)
        return frame.classifier.classify(text)

    def _pick(self, node: AskNode, match: IntentMatch) -> tuple[str | None, float]:
        """The best intent this question expects (its ``on`` intents and the agent intent)."""
        expected = set(node.on)
        agent = self._agent_intent()
        if agent:
            expected.add(agent)
        if match.intent in expected:
            return match.intent, match.confidence
        threshold = self._frame.flow.intent_threshold
        for intent, score in match.ranked:
            if intent in expected and score >= threshold:
                return intent, score
        return None, match.confidence

    def _valid(self, node: AskNode, value: object) -> object:
        if value is None:
            return None
        if node.slot == "digits":
            digits = str(value)
            if len(digits) < node.min_digits or (node.max_digits is not None and len(digits) > node.max_digits):
                return None
        if node.slot == "number" and isinstance(value, int | float):
            if node.min_value is not None and value < node.min_value:
                return None
            if node.max_value is not None and value > node.max_value:
                return None
        return value

    def _accept(self, node: AskNode, value: object) -> None:
        if value is None:
            self._miss(node, "no_match")
            return
        self._vars[node.save_as] = value
        self._slots[node.save_as] = value
        if node.confirm is not None and self._needs_confirmation(node.confirm):
            self._pending = value
            self._confirm_misses = 0
            self._emit(Say(text=node.confirm.prompt.text(self._vars), barge_in=node.barge_in))
            self._listen(node, yes_no=True)
            self._wait = "confirm"
            return
        self._slot_done(node, value)

    def _needs_confirmation(self, confirm: Confirmation) -> bool:
        """``always``; or ``unsure``: a spoken answer with a word heard with less than ``sure_above``."""
        if confirm.when == "always":
            return True
        heard = self._heard
        if heard is None:  # keyed in: nothing to doubt
            return False
        probabilities = [w.confidence for w in heard.words] or [heard.confidence]
        return min(probabilities) < confirm.sure_above

    def _slot_done(self, node: AskNode, value: object) -> None:
        if node.slot == "yes_no" and isinstance(value, bool) and ("yes" if value else "no") in node.on:
            self._run(node.on["yes" if value else "no"])
        else:
            self._run(node.next)

    def _confirm_answer(self, node: AskNode, event: events.Transcript | events.DtmfDigit | events.NoInput) -> None:
        assert node.confirm is not None
        answer: bool | None = None
        if isinstance(event, events.Transcript):
            answer = parse_yes_no(event.text)
            self._utterances.append({"node": node.name, "confirm": True, "text": event.text, "value": answer})
        elif isinstance(event, events.DtmfDigit):
            answer = YES_NO_KEYS.get(event.digit.replace(node.terminator, "").strip())
            self._utterances.append({"node": node.name, "confirm": True, "dtmf": event.digit, "value": answer})
        if answer is True:
            self._slot_done(node, self._pending)
            return
        if answer is None:
            self._confirm_misses += 1
            if self._confirm_misses <= node.confirm.retries:
                self._emit(Say(text=self.flow.prompt("confirm_retry"), barge_in=node.barge_in))
                self._emit(Say(text=node.confirm.prompt.text(self._vars), barge_in=node.barge_in))
                self._listen(node, yes_no=True)
                return
        self._vars.pop(node.save_as, None)
        self._slots.pop(node.save_as, None)
        no_prompt = (node.confirm.no_prompt.text(self._vars) if node.confirm.no_prompt
                     else self.flow.prompt("confirm_no"))
        self._emit(Say(text=no_prompt, barge_in=node.barge_in))
        self._run(node.name)

    def _miss(self, node: AskNode, which: str) -> None:
        """A no-input or no-match: a tapered retry prompt, or the exit once retries are used up."""
        handler = node.no_input if which == "no_input" else node.no_match
        if which == "no_input":
            self._no_input += 1
            count = self._no_input
        else:
            self._no_match += 1
            count = self._no_match
        if count > handler.retries:
            target = handler.goto or node.otherwise
            if target:
                self._run(target)
            else:
                self._fallback(f"{which} retries used up at '{node.name}'",
                               self.flow.prompt("give_up"))
            return
        if handler.prompts:
            lead: Template | str = handler.prompts[min(count, len(handler.prompts)) - 1]
        else:
            lead = self.flow.prompt(which)
        self._prompt(node, lead)

    # ---- globals: agent, max turns, errors ---------------------------------------------------------

    def _agent_frame(self) -> int | None:
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index].flow.globals.agent_target:
                return index
        return None

    def _agent_intent(self) -> str | None:
        index = self._agent_frame()
        return self._stack[index].flow.globals.agent_intent if index is not None else None

    def _agent_dtmf(self) -> str | None:
        index = self._agent_frame()
        return self._stack[index].flow.globals.agent_dtmf if index is not None else None

    def _agent_requested(self, text: str) -> bool:
        """Whether an utterance that answered nothing else asks for a human."""
        index = self._agent_frame()
        if index is None:
            return False
        frame = self._stack[index]
        agent = frame.flow.globals.agent_intent
        if not agent:
            return False
        match = self._classify(frame, text)
        return match.intent == agent

    def _to_agent(self) -> None:
        index = self._agent_frame()
        assert index is not None
        target = self._stack[index].flow.globals.agent_target
        del self._stack[index + 1:]
        self._vars["last_intent"] = self._stack[index].flow.globals.agent_intent or self._vars["last_intent"]
        self._run(target)

    def _http_result(self, node: HttpNode, result: events.HttpResult) -> None:
        self._vars["http_status"] = result.status
        self._vars["http_error"] = result.error
        self._vars[node.save_as] = result.data
        if result.ok:
            self._run(node.next)
        elif node.on_failure:
            self._run(node.on_failure)
        else:
            raise FlowRuntimeError(f"HTTP {node.method} {node.url.source} failed at '{node.name}' "
                                   f"(status {result.status}, {result.error or 'no error text'}) and the node "
                                   "has no 'on_failure'")

    def _fail(self, exc: Exception) -> None:
        where = self._node.name if self._node else "?"
        reason = f"{type(exc).__name__} at '{where}': {exc}"
        log.error("call %s, flow %s: %s", self._vars.get("call_id"), self.flow.name, reason)
        self._vars["error"] = reason
        if not self._in_error:
            self._in_error = True
            for index in range(len(self._stack) - 1, -1, -1):
                target = self._stack[index].flow.globals.on_error
                if target:
                    del self._stack[index + 1:]
                    try:
                        self._run(target)
                        return
                    except Exception as again:  # the error handler itself failed: last resort below
                        log.error("call %s: on_error node failed too: %s", self._vars.get("call_id"), again)
                    break
        self._fallback(reason, None)

    def _fallback(self, reason: str, prompt: str | None) -> None:
        """Apologise and transfer to the fallback queue (or hang up when the flow names none)."""
        self._vars["error"] = self._vars.get("error") or reason
        self._emit(Say(text=prompt or self.flow.prompt("error"), barge_in=False))
        queue = flow_fallback_queue(self.flow)
        self._wait = None
        if queue:
            self._finish_transfer(queue, None, {"fallback_reason": reason})
            self.outcome = "fallback"
        else:
            self._emit(Hangup("error"))
            self.finished, self.outcome = True, "error"
