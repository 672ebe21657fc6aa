"""Replay scenarios: a scripted caller (audio, keys, silence, hang-up) and what the bot must do.

A scenario is a YAML file next to its recordings in ``audio_fixtures/``::

    flow: ../../flows/hotline.yaml      # relative to this file
    caller: "+15551234567"              # optional caller number
    called: "1000"                      # optional dialled number
    rate: 8000                          # 8000 (telephone) or 16000
    queues: ../../config/queues.yaml    # optional: transfers wait in these queues (agents logged out)...
    agents: [alice]                     # ...except these, who are logged in and answer at once
    variables: {api_base: $HTTP}        # flow variables; $HTTP is the local mock web server
    http:                               # mock webhooks served on 127.0.0.1 while the scenario runs
      GET /orders/12345: {status: 200, json: {status: shipped}}
    steps:
      - bot: "thanks for calling"       # the bot's prompts before the next caller step contain this
      - say: order_status.wav           # the caller speaks (a WAV next to this file)
      - dtmf: "12345#"                  # the caller keys digits
      - silence: 6                      # the caller says nothing for 6 s
      - say: agent.wav
        barge_in: true                  # spoken over the prompt, `after` seconds into it
        after: 0.8
      - hangup: true
    expect:
      intent: order_status
      slots: {order_number: "12345"}
      transfer: {queue: support, agent: alice, context: [intent, order_number]}  # agent: with queues:
      outcome: transferred
      barge_in: true
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.audio.wavfile import read_wav
from ivr.errors import AudioFormatError, ConfigError, Diagnostic
from ivr.yamlsource import Y, load_yaml_file

STEP_KEYS = {"bot", "say", "dtmf", "silence", "hangup", "barge_in", "after", "text"}
EXPECT_KEYS = {"intent", "slots", "transfer", "outcome", "barge_in", "prompts", "no_prompt", "variables"}
TOP_KEYS = {
    "flow",
    "caller",
    "called",
    "rate",
    "engine",
    "model",
    "variables",
    "http",
    "steps",
    "expect",
    "queues",
    "agents",
    "name",
    "description",
}


@dataclass(frozen=True)
class CallerStep:
    """One thing the caller does, with the bot prompts that must have been heard just before it."""

    line: int
    audio: str | None = None
    text: str = ""
    dtmf: str = ""
    silence: float = 0.0
    hangup: bool = False
    barge_in: bool = False
    after: float = 0.4
    bot: tuple[str, ...] = ()


@dataclass
class Scenario:
    """A loaded, checked scenario."""

    path: Path
    name: str
    flow: Path
    steps: list[CallerStep]
    expect: dict[str, Any]
    final_bot: tuple[str, ...] = ()
    caller: str = "+15550100"
    called: str = ""
    rate: int = 8000
    engine: str | None = None
    model: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    http: dict[str, dict[str, Any]] = field(default_factory=dict)
    audio: dict[str, bytes] = field(default_factory=dict)
    queues: Path | None = None
    """A queues file: the flow is checked against it and transfers wait in its queues (without ``agents``
    every agent is logged out, so the call takes the queue's no-agent path in the flow's language)."""
    agents: tuple[str, ...] = ()
    """Agents of ``queues`` logged in and answering every offer at once (the others are logged out)."""


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[Diagnostic] = []

    def error(self, node: Y, key: str | None, message: str, at_value: bool = False) -> None:
        """Report at ``key`` of the mapping ``node`` (at its value with ``at_value``), else at ``node``."""
        if key is not None and key in node.entries:
            key_node, value_node = node.entries[key]
            node = value_node if at_value else key_node
        self.errors.append(Diagnostic(str(self.path), node.line, node.col, message))


def _plain(node: Y, key: str, default: Any = None) -> Any:
    """The plain value under ``key`` of a mapping (``default`` when the key is absent)."""
    value = node.get(key)
    return default if value is None else value.plain()


def load_scenario(path: str | Path) -> Scenario:
    """Load and check a scenario; every problem is reported at once as ``file:line:col: message``."""
    path = Path(path)
    check = _Checker(path)
    not_a_scenario = "a scenario is a mapping with `flow:` and `steps:`"
    data, problems = load_yaml_file(path, str(path), kind="scenario", advice="split it into several scenarios",
                                    empty=not_a_scenario)
    if data is None or problems:
        raise ConfigError(problems)
    if data.kind != "map":
        raise ConfigError([Diagnostic(str(path), 1, 1, not_a_scenario)])
    for key in data.entries:
        if key not in TOP_KEYS:
            check.error(data, key, f"unknown key {key!r}; expected one of {', '.join(sorted(TOP_KEYS))}")
    flow = path.parent / str(_plain(data, "flow", ""))
    if "flow" not in data.entries:
        check.error(data, None, "missing `flow:` (path of the flow YAML, relative to this scenario)")
    elif not flow.is_file():
        check.error(data, "flow", f"flow file {flow} does not exist", at_value=True)
    queues = path.parent / str(_plain(data, "queues")) if _plain(data, "queues") else None
    if queues is not None and not queues.is_file():
        check.error(data, "queues", f"queues file {queues} does not exist", at_value=True)
    agents = _plain(data, "agents") or []
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        check.error(data, "agents", "agents must be a list of agent names from the queues file", at_value=True)
        agents = []
    elif agents and queues is None:
        check.error(data, "agents", "agents need `queues:` (the queues file they are defined in)")
    rate = _plain(data, "rate", 8000)
    if rate not in (8000, 16000):
        check.error(data, "rate", f"rate must be 8000 or 16000, not {rate!r}", at_value=True)
        rate = 8000
    mappings: dict[str, dict[str, Any]] = {}
    for key in ("expect", "variables", "http"):
        value = _plain(data, key) or {}
        if not isinstance(value, dict):
            check.error(data, key, f"`{key}:` must be a mapping (key: value lines)", at_value=True)
            value = {}
        mappings[key] = value
    scenario = Scenario(
        path=path,
        name=str(_plain(data, "name") or path.stem),
        flow=flow,
        steps=[],
        expect=mappings["expect"],
        caller=str(_plain(data, "caller", "+15550100")),
        called=str(_plain(data, "called", "")),
        rate=int(rate),
        engine=_plain(data, "engine"),
        model=_plain(data, "model"),
        variables=mappings["variables"],
        http={str(k): dict(v or {}) for k, v in mappings["http"].items()},
        queues=queues,
        agents=tuple(agents),
    )
    expect = data.get("expect")
    if expect is not None and expect.kind == "map":
        for key in expect.entries:
            if key not in EXPECT_KEYS:
                check.error(
                    expect, key, f"unknown expectation {key!r}; expected one of {', '.join(sorted(EXPECT_KEYS))}"
                )
    steps = data.get("steps")
    if steps is None or steps.kind != "seq" or not steps.items:
        check.error(data, "steps" if "steps" in data.entries else None, "`steps:` must be a non-empty list",
                    at_value="steps" in data.entries)
        steps = Y("seq", data.line, data.col)
    pending_bot: list[str] = []
    for raw in steps.items:
        if raw.kind != "map":
            check.error(raw, None, "each step is a mapping, e.g. `- say: answer.wav` or `- bot: text`")
            continue
        for key in raw.entries:
            if key not in STEP_KEYS:
                check.error(raw, key, f"unknown step key {key!r}; expected one of {', '.join(sorted(STEP_KEYS))}")
        if "bot" in raw.entries:
            bot = _plain(raw, "bot")
            pending_bot.extend([str(b) for b in bot] if isinstance(bot, list) else [str(bot)])
            if len(raw.entries) > 1:
                check.error(raw, "bot", "`bot:` stands alone in its step (it checks the prompts before the next one)")
            continue
        actions = [k for k in ("say", "dtmf", "silence", "hangup") if k in raw.entries]
        if len(actions) != 1:
            check.error(raw, None, "a caller step has exactly one of say, dtmf, silence, hangup")
            continue
        audio = None
        if "say" in raw.entries:
            audio = str(_plain(raw, "say"))
            wav = path.parent / audio
            if audio not in scenario.audio:
                try:
                    scenario.audio[audio] = read_wav(wav, scenario.rate).pcm
                except AudioFormatError as exc:
                    problem = exc.problem if wav.exists() else f"audio file {wav} does not exist"
                    check.error(raw, "say", problem, at_value=True)
        barge_in = bool(_plain(raw, "barge_in", False))
        scenario.steps.append(
            CallerStep(
                line=raw.line,
                audio=audio,
                text=str(_plain(raw, "text", "")),
                dtmf=str(_plain(raw, "dtmf", "")),
                silence=float(_plain(raw, "silence", 0.0)),
                hangup=bool(_plain(raw, "hangup", False)),
                barge_in=barge_in,
                after=float(_plain(raw, "after", 0.8 if barge_in else 0.4)),
                bot=tuple(pending_bot),
            )
        )
        pending_bot = []
    scenario.final_bot = tuple(pending_bot)
    if check.errors:
        raise ConfigError(check.errors)
    return scenario
