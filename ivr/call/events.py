"""Everything a call reports, as typed events (as pipecat's frames): the session sends them to its
observer (the replay runner, metrics, the talk screen, the console); nobody matches on strings.

Each event has ``at`` (seconds into the call, on the call clock) and a ``name``, the stable word it is
written down under (logs, JSON, a replay's event list); ``data()`` is its fields as a plain dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class CallEvent:
    """Something that happened in a call, ``at`` seconds into it."""

    name: ClassVar[str] = "event"
    at: float

    def data(self) -> dict[str, Any]:
        """The event as a plain dict (``at`` first, then its fields), for JSON and logs."""
        return {"at": self.at, **{name: value for name, value in vars(self).items() if name != "at"}}


@dataclass(frozen=True, kw_only=True)
class PromptPlayed(CallEvent):
    """The bot queued a prompt for playback (``text`` synthesized, or the ``audio`` file)."""

    name: ClassVar[str] = "prompt"
    text: str
    audio: str | None = None
    barge_in: bool = True


@dataclass(frozen=True, kw_only=True)
class Listening(CallEvent):
    """The bot waits for the caller: speech and/or keys (``grammar``: the phrases expected), or records a
    message (``record``)."""

    name: ClassVar[str] = "listen"
    speech: bool = False
    dtmf: bool = False
    grammar: Sequence[str] | None = None
    record: bool = False


@dataclass(frozen=True, kw_only=True)
class CallerSpeaking(CallEvent):
    """The caller started speaking."""

    name: ClassVar[str] = "speech_started"


@dataclass(frozen=True, kw_only=True)
class PartialHeard(CallEvent):
    """What the recognizer heard so far while the caller speaks."""

    name: ClassVar[str] = "partial"
    text: str


@dataclass(frozen=True, kw_only=True)
class CallerSaid(CallEvent):
    """The caller's turn is over: the final transcript (masked when the answer is sensitive), and how the
    turn ended (``endpoint``: 'silence', or 'early' on a complete-sounding pause)."""

    name: ClassVar[str] = "transcript"
    text: str
    confidence: float
    endpoint: str


@dataclass(frozen=True, kw_only=True)
class IntentFound(CallEvent):
    """What the flow made of the caller's words (``intent`` None: no intent matched)."""

    name: ClassVar[str] = "intent"
    intent: str | None
    confidence: float | None


@dataclass(frozen=True, kw_only=True)
class RecognitionTimed(CallEvent):
    """How long recognition of a turn took after the caller stopped speaking."""

    name: ClassVar[str] = "asr"
    seconds: float


@dataclass(frozen=True, kw_only=True)
class KeysPressed(CallEvent):
    """The caller's keys for one answer (masked when the answer is sensitive)."""

    name: ClassVar[str] = "dtmf"
    digits: str


@dataclass(frozen=True, kw_only=True)
class NoInputHeard(CallEvent):
    """The caller gave no answer before the no-input timeout."""

    name: ClassVar[str] = "no_input"


@dataclass(frozen=True, kw_only=True)
class BargedIn(CallEvent):
    """The caller interrupted a prompt (``by``: 'speech' or 'dtmf')."""

    name: ClassVar[str] = "barge_in"
    by: str


@dataclass(frozen=True, kw_only=True)
class WebhookCalled(CallEvent):
    """The flow's webhook was sent."""

    name: ClassVar[str] = "http_request"
    method: str
    url: str


@dataclass(frozen=True, kw_only=True)
class WebhookAnswered(CallEvent):
    """The flow's webhook answered, failed or timed out (``status`` 0: no HTTP answer)."""

    name: ClassVar[str] = "http"
    url: str
    status: int
    ok: bool
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class TransferStarted(CallEvent):
    """The caller is being handed to a queue or a SIP URI, with what the bot learned (masked)."""

    name: ClassVar[str] = "transfer_started"
    target: str
    queue: str | None
    uri: str | None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TransferSent(CallEvent):
    """The channel was asked to transfer the call (a SIP REFER) and took it (``accepted``) or not."""

    name: ClassVar[str] = "transfer"
    target: str
    accepted: bool


@dataclass(frozen=True, kw_only=True)
class TransferFailed(CallEvent):
    """A transfer did not reach anyone (the call goes on to the fallback queue, then voicemail)."""

    name: ClassVar[str] = "transfer_failed"
    target: str
    error: str


@dataclass(frozen=True, kw_only=True)
class CallQueued(CallEvent):
    """The caller waits in an agent queue (``position`` 1: next)."""

    name: ClassVar[str] = "queued"
    queue: str
    position: int


@dataclass(frozen=True, kw_only=True)
class AgentConnected(CallEvent):
    """An agent took the call (``mode``: 'refer' or 'bridged')."""

    name: ClassVar[str] = "agent_connected"
    agent: str
    uri: str
    mode: str


@dataclass(frozen=True, kw_only=True)
class AgentLeft(CallEvent):
    """The agent of a bridged call hung up; the caller stays for the flow's ``after_agent`` node (a survey)
    or is hung up on (``resumes_at`` empty)."""

    name: ClassVar[str] = "agent_left"
    agent: str
    resumes_at: str = ""


@dataclass(frozen=True, kw_only=True)
class CallbackRequested(CallEvent):
    """The caller pressed the key to keep their place in ``queue`` and be called back at ``number``."""

    name: ClassVar[str] = "callback_requested"
    queue: str
    number: str


@dataclass(frozen=True, kw_only=True)
class QueueOverflowed(CallEvent):
    """A queue's overflow rule moved the caller on (``kind``: queue, voicemail, node …)."""

    name: ClassVar[str] = "overflow"
    kind: str
    target: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class BotHungUp(CallEvent):
    """The flow ended the call."""

    name: ClassVar[str] = "hangup"
    reason: str


@dataclass(frozen=True, kw_only=True)
class CallFailed(CallEvent):
    """An unexpected error in the call (it apologises and goes to the fallback)."""

    name: ClassVar[str] = "error"
    error: str


@dataclass(frozen=True, kw_only=True)
class TurnLatency(CallEvent):
    """From the end of the caller's turn to the first audio of the bot's reply."""

    name: ClassVar[str] = "turn_latency"
    seconds: float


@dataclass(frozen=True, kw_only=True)
class MessageRecorded(CallEvent):
    """A recording (a flow's ``record`` node, or voicemail) was saved."""

    name: ClassVar[str] = "recording"
    path: str
    duration: float


@dataclass(frozen=True, kw_only=True)
class QuestionAnswered(CallEvent):
    """The flow answered the caller's question (masked) from its knowledge file's ``entry``."""

    name: ClassVar[str] = "faq_answered"
    question: str
    entry: str
    confidence: float
    node: str


@dataclass(frozen=True, kw_only=True)
class QuestionUnanswered(CallEvent):
    """The caller asked something (masked) the knowledge file has no answer to; ``best`` came closest.
    Counted by ``Store.unanswered_questions`` for the top-10 report."""

    name: ClassVar[str] = "faq_unanswered"
    question: str
    best: str | None
    confidence: float
    node: str


@dataclass(frozen=True, kw_only=True)
class CallFinished(CallEvent):
    """The call is over: its outcome and what the bot learned (masked)."""

    name: ClassVar[str] = "end"
    outcome: str
    context: dict[str, Any] = field(default_factory=dict)
