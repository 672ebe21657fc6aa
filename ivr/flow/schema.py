"""The compiled, checked form of a call flow: what the loader produces and the interpreter runs.

Every node is a small dataclass; names of other nodes are plain strings already checked to exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ivr.flow.knowledge import Knowledge
from ivr.flow.prompts import default_prompts
from ivr.flow.templates import Template, TemplateValue
from ivr.nlu.types import IntentClassifier

NODE_TYPES = ("say", "ask", "branch", "set", "http", "transfer", "record", "recording", "goto", "subflow", "hangup",
              "return", "answer")
"""The key that gives a node its type; each node has exactly one of these."""

SLOT_KINDS = ("digits", "number", "yes_no", "text")
"""What an ask node can collect instead of an intent."""

INPUT_MODES = ("both", "speech", "dtmf")


@dataclass(eq=False)
class Node:
    """Fields every node has: its name and where it is written (1-based line and column)."""

    name: str
    line: int
    col: int

    @property
    def kind(self) -> str:
        """The node type ('say', 'ask', ...)."""
        return type(self).__name__.removesuffix("Node").lower()


@dataclass(eq=False)
class SayNode(Node):
    """Speak ``text`` (a template) or play ``audio`` (absolute path), then go to ``next``."""

    text: Template | None = None
    audio: str | None = None
    barge_in: bool = True
    next: str = ""


@dataclass(eq=False)
class RetryHandler:
    """What to do on no-input or no-match: up to ``retries`` more tries, saying ``prompts[n-1]`` on the
    n-th miss (the last one repeats: tapered prompts), then go to ``goto`` (or the node's ``otherwise``)."""

    retries: int
    prompts: tuple[Template, ...]
    goto: str | None = None


@dataclass(eq=False)
class Confirmation:
    """Read back a collected slot ("I heard 1 2 3 4, is that right?"); a no re-asks the question.

    ``when``: ``always``, or ``unsure``: only a spoken answer with a word the recognizer gave a probability
    under ``sure_above`` (keyed answers are never confirmed then).
    """

    prompt: Template
    retries: int = 2
    no_prompt: Template | None = None
    when: str = "always"
    sure_above: float = 0.85


@dataclass(frozen=True)
class SpeechSettings:
    """How a flow's callers are recognised: engine and model (defaults by language), and the confidence
    under which a transcript counts as not understood (a no-match, asked again, rather than a guess)."""

    engine: str | None = None
    """``whisper`` or ``vosk``; None: whisper for English, Vosk otherwise."""
    model: str | None = None
    """A whisper model (``tiny.en``, ``base``) or a Vosk model name or folder; None: the engine's default."""
    min_confidence: float = 0.35


@dataclass(eq=False)
class AskNode(Node):
    """Ask a question and wait for speech and/or DTMF.

    Either intents (``on`` maps intent → node, ``dtmf`` maps key → intent) or a ``slot`` (digits, number,
    yes_no, text) saved in the variable ``save_as`` before going to ``next`` (a yes_no slot may branch
    with ``on: {"yes": node, "no": node}``).
    """

    prompt: Template | None = None
    audio: str | None = None
    input: str = "both"
    slot: str | None = None
    save_as: str = ""
    min_digits: int = 1
    max_digits: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    on: dict[str, str] = field(default_factory=dict)
    dtmf: dict[str, str] = field(default_factory=dict)
    terminator: str = "#"
    timeout: float = 5.0
    end_silence: float = 0.5
    max_speech: float = 15.0
    inter_digit_timeout: float = 3.0
    barge_in: bool = True
    grammar: tuple[str, ...] | None = None
    no_input: RetryHandler = field(default_factory=lambda: RetryHandler(2, ()))
    no_match: RetryHandler = field(default_factory=lambda: RetryHandler(2, ()))
    repeat_prompt: bool = True
    confirm: Confirmation | None = None
    otherwise: str | None = None
    next: str | None = None
    sensitive: str = ""
    """``card``, ``secret`` or ``none`` (see docs/flows.md, "Sensitive values"); '' when not declared."""
    on_question: str | None = None
    """An intent menu: where an utterance goes that no intent takes but the flow's knowledge answers."""


@dataclass(eq=False)
class BranchCase:
    """One ``if`` of a branch node: when ``condition`` is truthy go to ``goto``."""

    condition: Template
    goto: str


@dataclass(eq=False)
class BranchNode(Node):
    """Go to the first case whose condition holds, else ``otherwise``."""

    cases: tuple[BranchCase, ...] = ()
    otherwise: str = ""


@dataclass(eq=False)
class SetNode(Node):
    """Set variables (values may be templates; a lone ``{{ expr }}`` keeps its type), then ``next``."""

    values: dict[str, TemplateValue] = field(default_factory=dict)
    next: str = ""


@dataclass(eq=False)
class HttpNode(Node):
    """Call a web service; the JSON reply is saved in ``save_as``. 2xx → ``next``, else ``on_failure``."""

    method: str = "GET"
    url: Template = field(default_factory=lambda: Template(""))
    headers: dict[str, Template] = field(default_factory=dict)
    json: TemplateValue | None = None
    timeout: float = 5.0
    retries: int = 0
    filler: Template | None = None
    filler_after: float = 1.0
    save_as: str = "result"
    next: str = ""
    on_failure: str | None = None


@dataclass(eq=False)
class TransferNode(Node):
    """Say ``say`` (optional) and hand the caller to ``queue`` or SIP ``uri`` with the call context plus
    ``context`` (extra keys, templated)."""

    queue: Template | None = None
    uri: Template | None = None
    say: Template | None = None
    context: dict[str, TemplateValue] = field(default_factory=dict)
    after_agent: str | None = None
    """The node the caller goes on to when a bridged agent hangs up first (a survey); None: the call ends."""


@dataclass(eq=False)
class RecordNode(Node):
    """Say ``prompt``, record the caller; ``save_as`` gets ``{"path": ..., "duration": ...}``."""

    prompt: Template | None = None
    audio: str | None = None
    max_seconds: float = 60.0
    end_silence: float = 3.0
    terminator: str = "#"
    beep: bool = True
    save_as: str = "recording"
    next: str = ""


@dataclass(eq=False)
class RecordingNode(Node):
    """Pause or resume the call recording (``recording: pause`` / ``recording: resume``), then ``next``."""

    pause: bool = True
    next: str = ""


@dataclass(frozen=True)
class RecordingSettings:
    """A flow's top-level ``recording:``: every call is recorded, after ``announce`` is said."""

    announce: str = ""


@dataclass(eq=False)
class GotoNode(Node):
    """Jump to ``target``."""

    target: str = ""


@dataclass(eq=False)
class SubflowNode(Node):
    """Run another flow file (sharing the call's variables); when it reaches ``return`` go to ``next``."""

    path: str = ""
    flow: Flow | None = None
    next: str = ""


@dataclass(eq=False)
class HangupNode(Node):
    """Say ``say`` (optional) and end the call with ``reason``."""

    say: Template | None = None
    reason: str = "completed"


@dataclass(eq=False)
class AnswerNode(Node):
    """Answer ``question`` (a template; None: the caller's last utterance) from the flow's knowledge file.

    Answered: say the entry's answer, then go to its ``follow_up`` or ``next``. Unanswered (below the
    knowledge threshold): go to ``otherwise`` (the question is logged for the top-10 report).
    """

    question: Template | None = None
    next: str = ""
    otherwise: str = ""


@dataclass(eq=False)
class ReturnNode(Node):
    """Leave a sub-flow and continue in the calling flow (in a main flow: hang up)."""


@dataclass(eq=False)
class Globals:
    """Flow-wide handlers.

    ``agent_intent`` (or the ``agent_dtmf`` key in a menu) anywhere → ``agent_target``; more than
    ``max_turns`` questions → ``max_turns_target``; a failing template, expression, HTTP call without a
    failure path or exhausted retries without a target → ``on_error`` node, or by default say
    ``error_prompt`` and transfer to ``fallback_queue`` (hang up if there is none).
    """

    agent_intent: str | None = None
    agent_dtmf: str | None = None
    agent_target: str | None = None
    max_turns: int = 30
    max_turns_target: str | None = None
    on_error: str | None = None
    fallback_queue: str | None = None
    error_prompt: str | None = None
    """Same as ``prompts: {error: ...}`` (kept for existing flows); default: the language's ``error``."""


@dataclass(eq=False)
class Flow:
    """A checked call flow, ready to run. Shared read-only by every call that uses it."""

    name: str
    path: str
    directory: Path
    start: str
    nodes: dict[str, Node]
    version: int = 1
    language: str = "en-US"
    description: str = ""
    intents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    intent_threshold: float = 0.5
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    variables: dict[str, object] = field(default_factory=dict)
    numbers: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    globals: Globals = field(default_factory=Globals)
    prompts: dict[str, str] = field(default_factory=dict)
    """System prompts by name (see ``ivr.flow.prompts``): the language's defaults with the flow's own."""
    sources: tuple[Path, ...] = ()
    defines: frozenset[str] = frozenset()
    classifier: IntentClassifier | None = None
    sensitive: dict[str, str] = field(default_factory=dict)
    """Slot or variable name → ``card``, ``secret`` or ``none``, as declared."""
    recording: RecordingSettings | None = None
    """Record every call of the flow (None: only when a queue's ``record:`` asks)."""
    knowledge: Knowledge | None = None
    """The questions the flow answers itself (``knowledge:``), for ``answer`` nodes and ``on_question``."""

    def prompt(self, name: str) -> str:
        """The system prompt ``name`` (``no_match``, ``error``, ``voicemail``...) in the flow's language."""
        return self.prompts.get(name) or default_prompts(self.language)[name]

    def subflows(self) -> list[Flow]:
        """The flows this flow calls directly."""
        return [n.flow for n in self.nodes.values() if isinstance(n, SubflowNode) and n.flow is not None]


def flow_fallback_queue(flow: Flow) -> str | None:
    """Where the flow's calls go when something fails: ``global.fallback_queue``, else its first queue."""
    return flow.globals.fallback_queue or (flow.queues[0] if flow.queues else None)
