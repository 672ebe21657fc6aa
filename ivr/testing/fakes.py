"""Small fakes for testing flows, calls and queues without speech models or telephony.

They are the ones the project's own tests use::

    from ivr.services import SpeechServices
    from ivr.testing.fakes import FakeAsr, FakeTts

    services = SpeechServices(asr=FakeAsr(["talk to a person"]), tts=FakeTts())

- :class:`FakeAsr` "recognises" each utterance the caller speaks as the next text of a script (real voice
  activity detection still decides where an utterance starts and ends);
- :class:`FakeTts` "speaks" silence of a realistic length, so prompts take time and can be barged into;
- :class:`FakeClock` and :class:`FakeConnector` drive the ACD (:class:`~ivr.queue.engine.Acd`): time moves
  when the test says so, and agents answer, decline or let it ring when the test says so;
- :class:`FakeChannel` is a caller's call leg as the queue's SIP agent connector sees it: it records the
  agent dials and REFERs, and the test plays the SIP side.

Nothing here imports a speech engine or pjsua2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.audio.frame import AudioFrame
from ivr.events import Transcript
from ivr.queue.callbacks import CallbackAttempt, CallbackReport
from ivr.queue.connector import Offer, OfferResult, ReportOffer
from ivr.speech.interfaces import RecognizerCapabilities

if TYPE_CHECKING:
    from ivr.speech.interfaces import AsrEngine, Recognizer, Synthesizer


class FakeRecognizer:
    """One call's recognizer of a :class:`FakeAsr`: counts the frames it is fed and never gives partials."""

    capabilities = RecognizerCapabilities()

    def __init__(self, asr: FakeAsr) -> None:
        self.asr = asr
        self.frames = 0

    def accept(self, frame: AudioFrame) -> Transcript | None:
        """Count the frame; no partial transcript."""
        self.frames += 1
        return None

    def finish(self) -> Transcript:
        """The next text of the script (empty once it is used up), with confidence 0.9."""
        return Transcript(self.asr.texts.pop(0) if self.asr.texts else "", 0.9)

    def reset(self) -> None:
        """Forget the frames fed so far."""
        self.frames = 0

    def peek(self) -> Transcript:
        """The next text of the script, left in it (not called: the capabilities declare no peek)."""
        return Transcript(self.asr.texts[0] if self.asr.texts else "", 0.9)


class FakeAsr:
    """A speech recogniser that hears each utterance as the next text of ``texts``.

    Every recognizer made from it takes from the same script, in order. ``grammars`` records the phrase
    list (or None) each recognizer was asked for, so a test can check what a ``listen`` offered.
    """

    name = "fake"
    capabilities = RecognizerCapabilities()

    def __init__(self, texts: Sequence[str] = ()) -> None:
        self.texts = list(texts)
        self.grammars: list[Sequence[str] | None] = []

    def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> FakeRecognizer:
        """A recognizer for one call (the rate is ignored: no audio is decoded)."""
        self.grammars.append(grammar)
        return FakeRecognizer(self)


class FakeTts:
    """A synthesizer that renders 0.1 s of silence per word, so prompts have a realistic length."""

    def synthesize(self, text: str, sample_rate: int) -> bytes:
        """PCM16 silence: 0.1 s per word of ``text`` (at least one word)."""
        return bytes(int(sample_rate * 0.1 * max(1, len(text.split()))) * 2)

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        """The whole prompt as one chunk."""
        yield self.synthesize(text, sample_rate)


class FakeClock:
    """A clock that moves only when told (``advance``); pass ``clock`` to :class:`~ivr.queue.engine.Acd`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class FakeConnector:
    """An ACD agent connector that records offers; the test answers, rejects or lets them ring. ``auto``
    answers agents at once by name (value: an OfferResult)."""

    auto: dict[str, OfferResult] = field(default_factory=dict)
    offers: list[Offer] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    _reports: dict[str, ReportOffer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        """Record the offer, and report at once if the agent is in ``auto``."""
        with self._lock:
            self.offers.append(offer)
            self._reports[offer.offer_id] = report
        if offer.agent in self.auto:
            self.report(offer.offer_id, self.auto[offer.agent])

    def cancel(self, offer_id: str) -> None:
        """Record the cancel; the offer can no longer be answered."""
        with self._lock:
            self.cancelled.append(offer_id)
            self._reports.pop(offer_id, None)

    def ringing(self) -> list[Offer]:
        """Offers neither reported nor cancelled."""
        with self._lock:
            return [o for o in self.offers if o.offer_id in self._reports]

    def ringing_agents(self) -> list[str]:
        """Names of agents whose phone rings now."""
        return [o.agent for o in self.ringing()]

    def report(self, offer_id: str, result: OfferResult) -> None:
        """Report an offer's result to the ACD."""
        with self._lock:
            report = self._reports.pop(offer_id, None)
        if report is not None:
            report(offer_id, result)

    def answer(self, agent: str) -> Offer:
        """The agent picks up the call ringing on their phone."""
        offer = next(o for o in self.ringing() if o.agent == agent)
        self.report(offer.offer_id, OfferResult.ANSWERED)
        return offer

    def reject(self, agent: str, result: OfferResult = OfferResult.REJECTED) -> None:
        """The agent declines (or the phone fails)."""
        offer = next(o for o in self.ringing() if o.agent == agent)
        self.report(offer.offer_id, result)


@dataclass
class FakeChannel:
    """A caller's call leg as :class:`~ivr.sip.agents.SipAgentConnector` sees it: records agent dials,
    cancels and REFERs; the test plays the SIP side by calling ``results[request](request, outcome)``."""

    call_id: str = "call-1"
    connected: bool = True
    refer_ok: bool = True
    """What a REFER (``transfer``) returns: True, the caller's side accepted it."""
    dials: list[tuple[str, str, dict[str, str], float]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    transfers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    results: dict[str, Callable[[str, str], None]] = field(default_factory=dict)

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """Record a blind REFER of the caller to ``target``."""
        self.transfers.append((target, headers))
        return self.refer_ok

    def dial_agent(self, request: str, uri: str, headers: dict[str, str], ring_timeout: float,
                   on_result: Callable[[str, str], None]) -> None:
        """Record a dial of the agent's phone; ``on_result`` is kept in ``results`` for the test to call."""
        self.dials.append((request, uri, headers, ring_timeout))
        self.results[request] = on_result

    def cancel_agent(self, request: str) -> None:
        """Record that the agent's phone should stop ringing."""
        self.cancels.append(request)


if TYPE_CHECKING:  # mypy checks that the fakes keep up with the protocols they stand in for
    _recognizer: Recognizer = FakeRecognizer(FakeAsr())
    _engine: AsrEngine = FakeAsr()
    _synthesizer: Synthesizer = FakeTts()


@dataclass
class FakeDialer:
    """A callback dialer that records attempts; the test reports how each went (``report``)."""

    attempts: list[CallbackAttempt] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    _reports: dict[str, CallbackReport] = field(default_factory=dict)

    def call_back(self, attempt: CallbackAttempt, report: CallbackReport) -> None:
        """Record the attempt."""
        self.attempts.append(attempt)
        self._reports[attempt.attempt_id] = report

    def cancel(self, attempt_id: str) -> None:
        """Record the cancel."""
        self.cancelled.append(attempt_id)

    def report(self, result: str, attempt: CallbackAttempt | None = None) -> None:
        """Report ``result`` for ``attempt`` (default: the latest)."""
        attempt = attempt or self.attempts[-1]
        self._reports[attempt.attempt_id](attempt.attempt_id, result)
