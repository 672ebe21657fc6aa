"""What the flow interpreter asks the call session to do. The session executes; the flow decides."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Say:
    """Play a prompt: synthesized ``text`` or a WAV ``audio`` file (absolute path). ``barge_in`` lets the
    caller interrupt it by speech or DTMF."""

    text: str = ""
    audio: str | None = None
    barge_in: bool = True


@dataclass(frozen=True)
class Listen:
    """Wait for the caller's answer by speech and/or DTMF after the prompts queued before it.

    The session replies with exactly one of: Transcript (final), DtmfDigit, NoInput, or Hangup.
    DTMF: the session collects the keys of one answer itself, until ``dtmf_max_digits`` keys, the
    ``dtmf_terminator`` key (not included) or ``dtmf_inter_digit_timeout`` seconds without a key, and
    delivers them as ONE event, e.g. ``DtmfDigit(digit="1234")``. ``grammar`` limits or biases
    recognition to phrases.
    """

    speech: bool = True
    dtmf: bool = True
    grammar: tuple[str, ...] | None = None
    no_input_timeout: float = 5.0
    end_silence: float = 0.5
    max_speech: float = 15.0
    dtmf_max_digits: int = 1
    dtmf_terminator: str = "#"
    dtmf_inter_digit_timeout: float = 3.0
    sensitive: str = ""
    """The answer is a ``card`` number or a ``secret``: what the session writes and reports of it is masked."""


@dataclass(frozen=True)
class Record:
    """Record the caller (e.g. a voicemail) to a WAV file until silence, ``max_seconds`` or the
    terminator key; the session replies with RecordingFinished."""

    max_seconds: float = 60.0
    end_silence: float = 3.0
    terminator: str = "#"
    beep: bool = True


@dataclass(frozen=True)
class RecordingControl:
    """Pause or resume the call recording (a ``recording: pause`` / ``recording: resume`` node); no reply.
    A call that is not recorded ignores it."""

    pause: bool


@dataclass(frozen=True)
class HttpRequest:
    """Call a webhook; the session replies with HttpResult. While waiting longer than ``filler_after``
    seconds the session plays ``filler`` (if set) so the caller hears no dead air."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: object = None
    timeout: float = 5.0
    retries: int = 0
    filler: str | None = None
    filler_after: float = 1.0


@dataclass(frozen=True)
class Transfer:
    """Hand the caller to a human: ``queue`` name or SIP ``uri``, with everything the bot learned."""

    queue: str | None = None
    uri: str | None = None
    context: dict[str, object] = field(default_factory=dict)
    after_agent: str | None = None
    """Where the flow goes on when a bridged agent hangs up first (see ``Interpreter.resume_at``)."""


@dataclass(frozen=True)
class Hangup:
    """End the call; ``reason`` is recorded as the call outcome."""

    reason: str = "completed"


@dataclass(frozen=True)
class KnowledgeLookup:
    """A caller's question was looked up in the flow's knowledge file (the session records it, masked, as a
    call event): ``entry`` answered it, or None when nothing scored ``threshold`` (``best`` came closest)."""

    question: str
    node: str
    entry: str | None
    best: str | None
    confidence: float


FlowAction = Say | Listen | Record | RecordingControl | HttpRequest | Transfer | Hangup | KnowledgeLookup
