"""Helpers to test a flow without audio: a keyword classifier and a scripted caller.

```python
call = ScriptedCall(load_flow("flows/hotline.yaml", classifier_factory=KeywordClassifier.build),
                    http=lambda req: HttpResult(ok=True, status=200, data={"status": "shipped"}))
call.say("where is my order")
call.press("12345#")
assert call.transfer is None and "shipped" in call.said()[-1]
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ivr import events
from ivr.flow.actions import FlowAction, Hangup, HttpRequest, Listen, Record, Say, Transfer
from ivr.flow.interpreter import CallInterpreter
from ivr.flow.schema import Flow
from ivr.nlu.types import IntentClassifier, IntentMatch

_STOP = frozenset({"a", "an", "the", "i", "i'd", "i'm", "me", "my", "to", "is", "it", "of", "for", "please", "can",
                   "you", "want", "like", "would", "on", "in", "and"})


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[\w']+", text.lower()) if w not in _STOP}


class KeywordClassifier:
    """A tiny word-overlap intent classifier (Dice overlap with the best example). For tests and for
    trying a flow without the intent model; not meant to be accurate."""

    def __init__(self, examples: Mapping[str, list[str]], threshold: float = 0.5) -> None:
        self.examples = {intent: [_words(e) for e in texts] for intent, texts in examples.items()}
        self.threshold = threshold

    @classmethod
    def build(cls, examples: dict[str, list[str]], threshold: float) -> IntentClassifier:
        """Matches ``ClassifierFactory`` so it can be passed to ``load_flow``."""
        return cls(examples, threshold)

    def classify(self, text: str) -> IntentMatch:
        """Score each intent by its best-overlapping example."""
        words = _words(text)
        scores: list[tuple[str, float]] = []
        for intent, examples in self.examples.items():
            best = max((2 * len(words & ex) / (len(words) + len(ex)) for ex in examples if ex or words), default=0.0)
            scores.append((intent, round(best, 3)))
        scores.sort(key=lambda pair: -pair[1])
        if not scores:
            return IntentMatch(None, 0.0)
        top, confidence = scores[0]
        return IntentMatch(top if confidence >= self.threshold else None, confidence, tuple(scores))


HttpHandler = Callable[[HttpRequest], events.HttpResult]


class ScriptedCall:
    """One call driven by scripted caller steps; HTTP requests and recordings are answered on the spot.

    ``actions`` holds everything the flow asked for, in order. ``hours`` answers ``open('name')``, for
    example ``OpenCheck(load_queues("config/queues.yaml").open_hours(), FakeClock(...))``.
    """

    def __init__(self, flow: Flow, call_vars: Mapping[str, object] | None = None,
                 classifier: IntentClassifier | None = None, http: HttpHandler | None = None,
                 recording: events.RecordingFinished | None = None,
                 hours: Callable[[str], bool] | None = None) -> None:
        defaults = {"caller": "+15551230000", "called": "1000", "call_id": "test-call"}
        self.interpreter = CallInterpreter(flow, {**defaults, **(call_vars or {})}, classifier, hours=hours)
        self.http = http
        self.recording = recording or events.RecordingFinished(path="message.wav", duration=4.0)
        self.actions: list[FlowAction] = []
        self.requests: list[HttpRequest] = []
        self._feed(self.interpreter.start())

    def _feed(self, actions: list[FlowAction]) -> list[FlowAction]:
        out = list(actions)
        self.actions.extend(actions)
        for action in actions:
            if isinstance(action, HttpRequest):
                self.requests.append(action)
                if self.http is not None:
                    out.extend(self._feed(self.interpreter.handle(self.http(action))))
            elif isinstance(action, Record):
                out.extend(self._feed(self.interpreter.handle(self.recording)))
        return out

    def send(self, event: events.ControlEvent) -> list[FlowAction]:
        """Deliver any event; returns the actions it caused (including those of auto-answers)."""
        return self._feed(self.interpreter.handle(event))

    def say(self, text: str, confidence: float = 0.9) -> list[FlowAction]:
        """The caller says ``text`` (a final transcript)."""
        return self.send(events.Transcript(text=text, confidence=confidence))

    def press(self, keys: str) -> list[FlowAction]:
        """The caller keys ``keys`` (delivered as one DtmfDigit, as the session does)."""
        return self.send(events.DtmfDigit(digit=keys))

    def silence(self) -> list[FlowAction]:
        """The caller says nothing until the no-input timeout."""
        return self.send(events.NoInput())

    def hang_up(self) -> list[FlowAction]:
        """The caller hangs up."""
        return self.send(events.Hangup())

    def said(self) -> list[str]:
        """Texts of every Say so far."""
        return [a.text for a in self.actions if isinstance(a, Say)]

    @property
    def listening(self) -> Listen | None:
        """The last action when it is a Listen (the flow waits for the caller), else None."""
        last = self.actions[-1] if self.actions else None
        return last if isinstance(last, Listen) else None

    @property
    def transfer(self) -> Transfer | None:
        """The Transfer that ended the call, if any."""
        return next((a for a in self.actions if isinstance(a, Transfer)), None)

    @property
    def hangup(self) -> Hangup | None:
        """The Hangup that ended the call, if any."""
        return next((a for a in self.actions if isinstance(a, Hangup)), None)

    @property
    def finished(self) -> bool:
        """Whether the call is over."""
        return self.interpreter.finished
