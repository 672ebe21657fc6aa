"""YAML tree → checked ``Flow``, collecting every problem with its position.

Two passes: the first reads each node (types, unknown keys, template syntax) and records references to
nodes, intents, variables and queues; the second checks those references once everything is known
(missing targets, undefined intents and variables, unknown queues, unreachable nodes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ivr.errors import Diagnostic
from ivr.flow.checks import loops_without_wait, subflow_returns
from ivr.flow.fields import IDENTIFIER, Reader, did_you_mean
from ivr.flow.knowledge import Knowledge, compile_knowledge
from ivr.flow.prompts import PROMPT_NAMES, placeholder_problem, system_prompts
from ivr.flow.schema import (
    INPUT_MODES,
    NODE_TYPES,
    SLOT_KINDS,
    AnswerNode,
    AskNode,
    BranchCase,
    BranchNode,
    Confirmation,
    Flow,
    Globals,
    GotoNode,
    HangupNode,
    HttpNode,
    Node,
    RecordingNode,
    RecordingSettings,
    RecordNode,
    RetryHandler,
    ReturnNode,
    SayNode,
    SetNode,
    SpeechSettings,
    SubflowNode,
    TransferNode,
)
from ivr.flow.templates import Template, TemplateProblem, TemplateValue, compile_condition, compile_template
from ivr.yamlsource import Y, load_yaml_file

TOP_KEYS = ("version", "name", "language", "description", "start", "numbers", "queues", "variables",
            "intents", "intent_threshold", "speech", "prompts", "global", "nodes", "sensitive", "knowledge",
            "recording")
SPEECH_KEYS = ("engine", "model", "min_confidence")
SPEECH_ENGINES = ("whisper", "vosk")
CONFIRM_WHEN = ("always", "unsure")
GLOBAL_KEYS = ("agent_intent", "agent_dtmf", "agent_target", "max_turns", "max_turns_target", "on_error",
               "fallback_queue", "error_prompt")
ASK_KEYS = ("prompt", "audio", "input", "slot", "save_as", "min_digits", "max_digits", "min", "max", "dtmf",
            "terminator", "timeout", "end_silence", "max_speech", "inter_digit_timeout", "barge_in", "grammar",
            "no_input", "no_match", "repeat_prompt", "confirm", "sensitive")
NODE_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "say": ("next",), "ask": ("on", "otherwise", "next", "on_question"), "answer": ("next", "otherwise"),
    "branch": ("otherwise",), "set": ("next",),
    "http": ("next", "on_failure"), "transfer": (), "record": ("next",), "recording": ("next",), "goto": (),
    "subflow": ("next",), "hangup": (), "return": (),
}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DTMF_KEYS = frozenset("0123456789*#ABCD")
SENSITIVITY = ("card", "secret", "none")

BUILTIN_VARIABLES = frozenset({
    "caller", "called", "call_id", "flow", "last_intent", "last_confidence", "last_text", "turns", "slots",
    "http_status", "http_error", "error", "open", "last_answer", "outbound",
})
"""Variables every call has (see docs/flows.md, "Variables")."""

FlowCache = dict[Path, tuple["Flow | None", list[Diagnostic]]]


@dataclass
class _Refs:
    """References recorded in pass one, checked in pass two."""

    targets: list[tuple[Y, str, str, str]] = field(default_factory=list)  # (at, target, from node, label)
    intents: list[tuple[Y, str]] = field(default_factory=list)
    templates: list[tuple[Y, Template | TemplateValue]] = field(default_factory=list)
    queues: list[tuple[Y, str]] = field(default_factory=list)
    defined: set[str] = field(default_factory=set)
    roots: list[str] = field(default_factory=list)


class FlowCompiler:
    """Compiles one flow file (and, through ``compile_file``, its sub-flows)."""

    def __init__(self, path: Path, shown: str, known_queues: frozenset[str], chain: tuple[Path, ...],
                 cache: FlowCache, intents_only: bool = False, server_queues: frozenset[str] | None = None,
                 hour_names: frozenset[str] | None = None) -> None:
        self.path = path
        self.hour_names = hour_names
        self.shown = shown
        self.known_queues = known_queues
        self.server_queues = server_queues
        self.chain = chain
        self.cache = cache
        self.intents_only = intents_only
        self.r = Reader(shown)
        self.refs = _Refs()
        self.sources: set[Path] = {path}
        self.intents: dict[str, tuple[str, ...]] = {}
        self.agent_intent: str | None = None
        self.declared_queues: frozenset[str] = known_queues
        self.broken_links = False  # a missing or misspelt link: unreachable nodes would only be echoes
        self.unsure_slot = False
        self.failed_nodes: set[str] = set()  # written but not compiled: links to them are not 'missing'
        self.knowledge: Knowledge | None = None
        self.knowledge_failed = False  # 'knowledge:' names a file with errors (reported on their own)

    # ---- entry -------------------------------------------------------------------------------------

    def compile(self) -> tuple[Flow | None, list[Diagnostic]]:
        """Read, check and build the flow; the flow is None when there is any diagnostic."""
        root, problems = load_yaml_file(self.path, self.shown)
        if root is None:
            return None, problems
        flow = self._top(root)
        diagnostics = sorted(set(self.r.diagnostics), key=lambda d: (d.path != self.shown, d.path, d.line, d.column))
        return (None if diagnostics else flow), diagnostics

    # ---- top level ---------------------------------------------------------------------------------

    def _top(self, root: Y) -> Flow | None:
        r = self.r
        if not r.is_map(root, "a flow file"):
            return None
        r.check_keys(root, TOP_KEYS, "the flow")
        required = ("version", "name") if self.intents_only else ("version", "name", "start", "nodes")
        for key in required:
            if root.get(key) is None:
                r.error(root, f"missing required key '{key}' at the top of the flow")
        version_node = root.get("version")
        version = r.integer(version_node, "'version'", 1, 1)
        if version_node is not None and version != 1:
            r.error(version_node, f"unsupported flow version {version}; this ivr reads version 1")
        name = r.string(root.get("name"), "'name'", self.path.stem) or self.path.stem
        language = r.string(root.get("language"), "'language'", "en-US") or "en-US"
        description = r.string(root.get("description"), "'description'", "") or ""
        threshold_node = root.get("intent_threshold")
        threshold = r.number(threshold_node, "'intent_threshold'", 0.5)
        if threshold > 1.0:
            r.error(threshold_node, f"'intent_threshold' is a confidence between 0 and 1, got {threshold:g}")
        speech = self._speech(root.get("speech"))
        numbers = tuple(v for _, v in r.string_list(root.get("numbers"), "'numbers'"))
        queue_items = r.string_list(root.get("queues"), "'queues'")
        queue_list = tuple(v for _, v in queue_items)
        self.declared_queues = frozenset(queue_list) | self.known_queues
        if self.server_queues is not None:  # the server's queues file decides; the flow's own list is checked too
            self.declared_queues = self.server_queues
            self.refs.queues.extend(queue_items)
        variables = self._variables(root.get("variables"))
        self.intents = self._intents(root.get("intents"))
        if self.intents_only:
            return Flow(name=name, path=self.shown, directory=self.path.parent, start="", nodes={},
                        version=version, language=language, description=description, intents=self.intents,
                        intent_threshold=threshold)
        globals_ = self._globals(root.get("global"))
        prompts = self._prompts(root.get("prompts"), language, globals_)
        self.knowledge = self._knowledge(root.get("knowledge"))
        self.agent_intent = globals_.agent_intent
        nodes: dict[str, Node] = {}
        nodes_node = root.get("nodes")
        if nodes_node is not None and r.is_map(nodes_node, "'nodes'"):
            if not nodes_node.entries:
                r.error(nodes_node, "'nodes' is empty; a flow needs at least one node")
            for node_name, (key_node, value) in nodes_node.entries.items():
                if not IDENTIFIER.match(node_name):
                    r.error(key_node, f"node name '{node_name}' must be made of letters, digits and '_'")
                node = self._node(node_name, key_node, value)
                if node is not None:
                    nodes[node_name] = node
                else:
                    self.failed_nodes.add(node_name)
        start = r.string(root.get("start"), "'start'", "") or ""
        if start and root.get("start") is not None:
            self.refs.targets.append((root.get("start"), start, "", "start"))  # type: ignore[arg-type]
        self._check_references(nodes, nodes_node, variables, start, globals_)
        sensitive = self._sensitive(root.get("sensitive"), nodes, set(variables) | self.refs.defined)
        recording = self._recording(root.get("recording"))
        return Flow(name=name, path=self.shown, directory=self.path.parent, start=start, nodes=nodes,
                    version=version, language=language, description=description, intents=self.intents,
                    intent_threshold=threshold, speech=speech, variables=variables, numbers=numbers,
                    queues=queue_list, prompts=prompts,
                    globals=globals_, sources=tuple(sorted(self.sources)),
                    defines=frozenset(variables) | frozenset(self.refs.defined), sensitive=sensitive,
                    knowledge=self.knowledge, recording=recording)

    def _knowledge(self, node: Y | None) -> Knowledge | None:
        """The knowledge file named by ``knowledge:`` (relative to the flow file), checked on its own."""
        rel = self.r.string(node, "'knowledge'")
        if rel is None or node is None:
            return None
        full = (self.path.parent / rel).resolve()
        shown = os.path.normpath(os.path.join(os.path.dirname(self.shown), rel))
        self.sources.add(full)  # watched for hot reload even while it is missing or broken
        if not full.is_file():
            self.r.error(node, f"knowledge file '{rel}' not found (looked for {full}); paths are relative to the "
                               "flow file")
            self.knowledge_failed = True
            return None
        knowledge, diagnostics = compile_knowledge(full, shown)
        self.r.diagnostics.extend(diagnostics)
        if knowledge is None:
            self.knowledge_failed = True
            self.r.error(node, f"knowledge file '{rel}' is invalid; fix the errors reported for {shown}")
        return knowledge

    def _recording(self, node: Y | None) -> RecordingSettings | None:
        """The top-level ``recording:`` (``true``, or ``{announce: text}``); None when absent or false."""
        r = self.r
        if node is None:
            return None
        if node.kind == "scalar" and isinstance(node.scalar, bool):
            return RecordingSettings() if node.scalar else None
        if not r.is_map(node, "'recording' (true, or a mapping with 'announce')"):
            return None
        r.check_keys(node, ("announce",), "'recording'")
        announce = r.string(node.get("announce"), "'announce' of 'recording'", "") or ""
        return RecordingSettings(announce=announce)

    def _sensitive(self, node: Y | None, nodes: dict[str, Node], known: set[str]) -> dict[str, str]:
        """Slot and variable name → ``card``, ``secret`` or ``none``: from the top-level ``sensitive:`` map
        and each slot question's own ``sensitive:``."""
        out: dict[str, str] = {}
        if node is not None and self.r.is_map(node, "'sensitive'"):
            for key, (key_node, value) in node.entries.items():
                if key not in known and not self.broken_links:
                    self.r.error(key_node, f"'sensitive' names '{key}', which no slot, set, http, record or "
                                           f"'variables:' defines{did_you_mean(key, sorted(known))}")
                kind = self.r.string(value, f"'sensitive' of '{key}'")
                if kind is not None and kind not in SENSITIVITY:
                    self.r.error(value, f"'sensitive' of '{key}' must be one of {', '.join(SENSITIVITY)}, got "
                                        f"'{kind}'{did_you_mean(kind, SENSITIVITY)}")
                elif kind is not None:
                    out[key] = kind
        for n in nodes.values():
            if isinstance(n, AskNode) and n.sensitive:
                out.setdefault(n.save_as, n.sensitive)
        return out

    def _speech(self, node: Y | None) -> SpeechSettings:
        r = self.r
        if node is None or not r.is_map(node, "'speech'"):
            return SpeechSettings()
        r.check_keys(node, SPEECH_KEYS, "'speech'")
        engine = r.string(node.get("engine"), "'engine'", "") or None
        if engine is not None and engine not in SPEECH_ENGINES:
            r.error(node.get("engine"), f"unknown speech engine '{engine}'{did_you_mean(engine, SPEECH_ENGINES)}; "
                                        f"use {' or '.join(SPEECH_ENGINES)}")
        model = r.string(node.get("model"), "'model'", "") or None
        confidence_node = node.get("min_confidence")
        confidence = r.number(confidence_node, "'min_confidence'", SpeechSettings().min_confidence)
        if confidence > 1.0:
            r.error(confidence_node, f"'min_confidence' is between 0 and 1, got {confidence:g}")
        return SpeechSettings(engine, model, confidence)

    def _prompts(self, node: Y | None, language: str, globals_: Globals) -> dict[str, str]:
        """The flow's system prompts: its language's defaults, ``global.error_prompt``, then ``prompts:``."""
        overrides: dict[str, str] = {}
        if globals_.error_prompt:
            overrides["error"] = globals_.error_prompt
        r = self.r
        if node is None or not r.is_map(node, "'prompts'"):
            return system_prompts(language, overrides)
        r.check_keys(node, PROMPT_NAMES, "'prompts'")
        for name, (_, value) in node.entries.items():
            text = r.string(value, f"prompt '{name}'")
            if name not in PROMPT_NAMES or text is None:
                continue
            problem = placeholder_problem(name, text)
            if problem:
                r.error(value, problem)
            overrides[name] = text
        return system_prompts(language, overrides)

    def _variables(self, node: Y | None) -> dict[str, object]:
        if node is None or not self.r.is_map(node, "'variables'"):
            return {}
        out: dict[str, object] = {}
        for key, (key_node, value) in node.entries.items():
            if not IDENTIFIER.match(key):
                self.r.error(key_node, f"variable name '{key}' must be made of letters, digits and '_'")
            elif key in BUILTIN_VARIABLES:
                self.r.error(key_node, f"'{key}' is a built-in variable; pick another name")
            out[key] = value.plain()
        return out

    def _intents(self, node: Y | None) -> dict[str, tuple[str, ...]]:
        r = self.r
        if node is None or not r.is_map(node, "'intents'"):
            return {}
        out: dict[str, tuple[str, ...]] = {}
        for intent, (key_node, spec) in node.entries.items():
            if not IDENTIFIER.match(intent):
                r.error(key_node, f"intent name '{intent}' must be made of letters, digits and '_'")
                continue
            if spec.kind != "map":
                r.error(spec, f"intent '{intent}' must be written as {intent}: {{examples: [\"...\", ...]}}, "
                              f"got {spec.describe()}")
                continue
            r.check_keys(spec, ("examples", "description"), f"intent '{intent}'")
            examples_node = spec.get("examples")
            if examples_node is None:
                r.error(key_node, f"intent '{intent}' has no 'examples'; give 5 to 20 things callers say")
                continue
            examples = tuple(v.strip() for _, v in r.string_list(examples_node, f"the examples of '{intent}'"))
            if not examples and examples_node.kind == "seq":
                r.error(examples_node, f"intent '{intent}' has an empty example list; give 5 to 20 examples")
            out[intent] = examples
        return out

    def _globals(self, node: Y | None) -> Globals:
        r = self.r
        g = Globals()
        if node is None or not r.is_map(node, "'global'"):
            return g
        r.check_keys(node, GLOBAL_KEYS, "'global'")
        g.agent_intent = r.string(node.get("agent_intent"), "'agent_intent'")
        if g.agent_intent and node.get("agent_intent") is not None:
            self.refs.intents.append((node.get("agent_intent"), g.agent_intent))  # type: ignore[arg-type]
        g.agent_dtmf = self._dtmf_key(node.get("agent_dtmf"), "'agent_dtmf'")
        g.agent_target = self._target(node, "agent_target", "", "agent (global)")
        if (g.agent_intent or g.agent_dtmf) and not g.agent_target:
            r.error(node, "'agent_intent'/'agent_dtmf' need 'agent_target': the node to go to when a caller "
                          "asks for an agent")
        g.max_turns = r.integer(node.get("max_turns"), "'max_turns'", 30, 1)
        g.max_turns_target = self._target(node, "max_turns_target", "", "max turns (global)")
        g.on_error = self._target(node, "on_error", "", "error (global)")
        g.fallback_queue = r.string(node.get("fallback_queue"), "'fallback_queue'")
        if g.fallback_queue and node.get("fallback_queue") is not None:
            self.refs.queues.append((node.get("fallback_queue"), g.fallback_queue))  # type: ignore[arg-type]
        g.error_prompt = r.string(node.get("error_prompt"), "'error_prompt'")
        for target in (g.agent_target, g.max_turns_target, g.on_error):
            if target:
                self.refs.roots.append(target)
        return g

    # ---- helpers -----------------------------------------------------------------------------------

    def _target(self, parent: Y, key: str, from_node: str, label: str) -> str | None:
        node = parent.get(key)
        value = self.r.string(node, f"'{key}'")
        if value is not None and node is not None:
            self.refs.targets.append((node, value, from_node, label))
        return value

    def _template(self, node: Y | None, what: str) -> Template | None:
        text = self.r.string(node, what)
        if text is None or node is None:
            return None
        try:
            template = compile_template(text)
        except TemplateProblem as exc:
            self.r.error(node, f"bad template in {what}: {exc}")
            return None
        self.refs.templates.append((node, template))
        return template

    def _value(self, node: Y, what: str) -> TemplateValue:
        """Any YAML value whose strings are templates."""

        def build(y: Y) -> object:
            if y.kind == "map":
                return {k: build(v) for k, (_, v) in y.entries.items()}
            if y.kind == "seq":
                return [build(item) for item in y.items]
            if isinstance(y.scalar, str):
                try:
                    template = compile_template(y.scalar)
                except TemplateProblem as exc:
                    self.r.error(y, f"bad template in {what}: {exc}")
                    return y.scalar
                self.refs.templates.append((y, template))
                return template
            return y.scalar

        return TemplateValue(build(node))

    def _audio(self, node: Y | None, what: str) -> str | None:
        rel = self.r.string(node, what)
        if rel is None:
            return None
        full = (self.path.parent / rel).resolve()
        if not full.is_file():
            self.r.error(node, f"audio file '{rel}' not found (looked for {full}); paths are relative to the "
                               "flow file")
        return str(full)

    def _dtmf_key(self, node: Y | None, what: str) -> str | None:
        if node is None:
            return None
        value = self.r.string(node, what)
        if value is not None and (len(value) != 1 or value not in DTMF_KEYS):
            self.r.error(node, f"{what} must be one key: 0-9, *, # or A-D, got {value!r}")
            return None
        return value

    # ---- nodes -------------------------------------------------------------------------------------

    def _node(self, name: str, key_node: Y, value: Y) -> Node | None:
        r = self.r
        if value.kind != "map":
            r.error(value, f"node '{name}' must be a mapping with one of: {', '.join(NODE_TYPES)}; got "
                           f"{value.describe()}")
            return None
        kinds = [k for k in value.entries if k in NODE_TYPES]
        if not kinds:
            unknown = [k for k in value.entries if k not in ("next", "on", "otherwise", "on_failure",
                                                            "description")]
            hint = did_you_mean(unknown[0], NODE_TYPES) if unknown else ""
            r.error(key_node, f"node '{name}' has no type: give it one of {', '.join(NODE_TYPES)}{hint}")
            self.broken_links = True
            return None
        if len(kinds) > 1:
            second = value.key_node(kinds[1])
            r.error(second, f"node '{name}' has both '{kinds[0]}' and '{kinds[1]}'; a node has exactly one "
                            "type (split it into two nodes joined by 'next')")
            return None
        kind = kinds[0]
        allowed = (kind, *NODE_EXTRA_KEYS[kind], "description")
        if any(key not in allowed for key in value.entries):
            self.broken_links = True
        r.check_keys(value, allowed, f"{kind} node '{name}'")
        body = value.get(kind)
        assert body is not None
        builder: Callable[[str, Y, Y, Y], Node | None] = getattr(self, f"_{kind}_node")
        node = builder(name, key_node, value, body)
        if node is None:
            self.broken_links = True
        if "next" in NODE_EXTRA_KEYS[kind] and kind not in ("ask", "subflow") and "next" not in value.entries:
            self.broken_links = True
            r.error(key_node, f"{kind} node '{name}' needs 'next': the node to go to afterwards")
        return node

    def _next(self, value: Y, name: str, key: str = "next", label: str = "next") -> str:
        return self._target(value, key, name, label) or ""

    def _say_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node:
        text: Template | None = None
        audio: str | None = None
        barge_in = True
        if body.kind == "map":
            self.r.check_keys(body, ("text", "audio", "barge_in"), f"say node '{name}'")
            text = self._template(body.get("text"), "'text'")
            audio = self._audio(body.get("audio"), "'audio'")
            barge_in = self.r.boolean(body.get("barge_in"), "'barge_in'", True)
            if body.get("text") is None and body.get("audio") is None:
                self.r.error(body, f"say node '{name}' needs 'text' or 'audio'")
        else:
            text = self._template(body, "'say'")
        return SayNode(name, key_node.line, key_node.col, text=text, audio=audio, barge_in=barge_in,
                       next=self._next(value, name))

    def _retry(self, node: Y | None, what: str, name: str, default_retries: int) -> RetryHandler:
        r = self.r
        if node is None:
            return RetryHandler(default_retries, ())
        if node.kind == "scalar" and isinstance(node.scalar, int) and not isinstance(node.scalar, bool):
            return RetryHandler(r.integer(node, f"'{what}'", default_retries), ())
        if not r.is_map(node, f"'{what}' of '{name}'"):
            return RetryHandler(default_retries, ())
        r.check_keys(node, ("retries", "prompt", "prompts", "goto"), f"'{what}' of '{name}'")
        retries = r.integer(node.get("retries"), "'retries'", default_retries)
        prompts: list[Template] = []
        if node.get("prompt") is not None and node.get("prompts") is not None:
            r.error(node.key_node("prompts"), f"'{what}' has both 'prompt' and 'prompts'; keep one")
        if node.get("prompt") is not None:
            template = self._template(node.get("prompt"), "'prompt'")
            prompts = [template] if template else []
        for item, _ in r.string_list(node.get("prompts"), "'prompts'"):
            template = self._template(item, "'prompts'")
            if template:
                prompts.append(template)
        goto = self._target(node, "goto", name, what)
        return RetryHandler(retries, tuple(prompts), goto)

    def _ask_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        if not r.is_map(body, f"'ask' of '{name}'"):
            return None
        r.check_keys(body, ASK_KEYS, f"ask node '{name}'")
        node = AskNode(name, key_node.line, key_node.col)
        self.unsure_slot = False  # an unknown slot type: skip the checks that depend on it
        node.prompt = self._template(body.get("prompt"), "'prompt'")
        node.audio = self._audio(body.get("audio"), "'audio'")
        misspelt = any(key not in ASK_KEYS for key in body.entries)  # e.g. 'promt': already reported
        if body.get("prompt") is None and body.get("audio") is None and not misspelt:
            r.error(body, f"ask node '{name}' has no 'prompt': the caller would wait in silence; add a prompt "
                          "(or an 'audio' recording)")
        mode = r.string(body.get("input"), "'input'", "both") or "both"
        if mode not in INPUT_MODES:
            r.error(body.get("input"), f"'input' must be one of {', '.join(INPUT_MODES)}, got {mode!r}"
                                       f"{did_you_mean(mode, INPUT_MODES)}")
            mode = "both"
        node.input = mode
        slot_node = body.get("slot")
        node.slot = r.string(slot_node, "'slot'")
        if node.slot is not None and node.slot not in SLOT_KINDS:
            r.error(slot_node, f"unknown slot type '{node.slot}'{did_you_mean(node.slot, SLOT_KINDS)}; use one "
                               f"of {', '.join(SLOT_KINDS)}")
            node.slot = None
            self.unsure_slot = True
        node.save_as = r.name(body.get("save_as"), "'save_as'", name) or name
        sensitive_node = body.get("sensitive")
        if sensitive_node is not None:
            kind = r.string(sensitive_node, "'sensitive'") or ""
            if kind not in SENSITIVITY:
                r.error(sensitive_node, f"'sensitive' must be one of {', '.join(SENSITIVITY)}, got '{kind}'"
                                        f"{did_you_mean(kind, SENSITIVITY)}")
            else:
                node.sensitive = kind
        if body.get("save_as") is not None and slot_node is None:
            r.error(body.key_node("save_as"), "'save_as' only applies to a 'slot'; intents are kept in "
                                              "last_intent")
        node.min_digits = r.integer(body.get("min_digits"), "'min_digits'", 1, 1)
        max_digits_node = body.get("max_digits")
        node.max_digits = r.integer(max_digits_node, "'max_digits'", 0, 1) if max_digits_node else None
        if node.max_digits is not None and node.max_digits < node.min_digits:
            r.error(max_digits_node, f"'max_digits' ({node.max_digits}) is below 'min_digits' ({node.min_digits})")
        min_node, max_node = body.get("min"), body.get("max")
        node.min_value = r.number(min_node, "'min'", 0.0, float("-inf")) if min_node else None
        node.max_value = r.number(max_node, "'max'", 0.0, float("-inf")) if max_node else None
        for key in ("min_digits", "max_digits"):
            if body.get(key) is not None and node.slot != "digits" and not self.unsure_slot:
                r.error(body.key_node(key), f"'{key}' only applies to 'slot: digits'")
        for key in ("min", "max"):
            if body.get(key) is not None and node.slot != "number" and not self.unsure_slot:
                r.error(body.key_node(key), f"'{key}' only applies to 'slot: number'")
        node.terminator = self._dtmf_key(body.get("terminator"), "'terminator'") or "#"
        node.timeout = r.number(body.get("timeout"), "'timeout'", 5.0, positive=True)
        node.end_silence = r.number(body.get("end_silence"), "'end_silence'", 0.5, positive=True)
        node.max_speech = r.number(body.get("max_speech"), "'max_speech'", 15.0, positive=True)
        node.inter_digit_timeout = r.number(body.get("inter_digit_timeout"), "'inter_digit_timeout'", 3.0,
                                            positive=True)
        node.barge_in = r.boolean(body.get("barge_in"), "'barge_in'", True)
        node.repeat_prompt = r.boolean(body.get("repeat_prompt"), "'repeat_prompt'", True)
        grammar_node = body.get("grammar")
        if grammar_node is not None:
            if grammar_node.kind == "scalar" and grammar_node.scalar == "examples":
                node.grammar = ("examples",)  # resolved below from the node's intents
            else:
                node.grammar = tuple(v for _, v in r.string_list(grammar_node, "'grammar'"))
        node.no_input = self._retry(body.get("no_input"), "no_input", name, 2)
        node.no_match = self._retry(body.get("no_match"), "no_match", name, 2)
        node.otherwise = self._target(value, "otherwise", name, "otherwise")
        self._ask_choices(node, value, body)
        confirm_node = body.get("confirm")
        if confirm_node is not None:
            node.confirm = self._confirm(confirm_node, node)
        if node.grammar == ("examples",):
            node.grammar = tuple(sorted({ex for intent in node.on for ex in self.intents.get(intent, ())}))
        if node.slot:
            self.refs.defined.add(node.save_as)
        return node

    def _ask_choices(self, node: AskNode, value: Y, body: Y) -> None:
        """Read ``on``, ``dtmf`` and ``next``: an intent menu or a slot question."""
        r = self.r
        name = node.name
        on_node = value.get("on")
        if on_node is not None and r.is_map(on_node, f"'on' of '{name}'"):
            for key, (k_node, target_node) in on_node.entries.items():
                target = r.string(target_node, f"the target of '{key}'")
                if target is None:
                    continue
                node.on[key] = target
                self.refs.targets.append((target_node, target, name, key))
                if node.slot is None:
                    self.refs.intents.append((k_node, key))
                elif node.slot == "yes_no" and key not in ("yes", "no"):
                    r.error(k_node, f"a yes_no question branches with 'on: {{\"yes\": ..., \"no\": ...}}', "
                                    f"not '{key}'{did_you_mean(key, ('yes', 'no'))}")
                elif node.slot != "yes_no":
                    r.error(k_node, f"'on' of a {node.slot} slot has no choices; use 'next' (and a branch node "
                                    "to test the value)")
        dtmf_node = body.get("dtmf")
        if dtmf_node is not None and r.is_map(dtmf_node, "'dtmf'"):
            if node.slot is not None:
                r.error(dtmf_node, f"a 'dtmf' map belongs to intent menus; a {node.slot} slot takes keys directly")
            for key, (k_node, intent_node) in dtmf_node.entries.items():
                if key not in DTMF_KEYS:
                    r.error(k_node, f"DTMF key '{key}' is not a phone key (0-9, *, #, A-D)")
                    continue
                intent = r.string(intent_node, f"the intent of key '{key}'")
                if intent is None:
                    continue
                node.dtmf[key] = intent
                self.refs.intents.append((intent_node, intent))
                if (node.slot is None and intent in self.intents and intent not in node.on
                        and intent != self.agent_intent):
                    r.error(intent_node, f"key '{key}' selects intent '{intent}' but 'on' of '{name}' has no "
                                         f"target for it; add '{intent}: <node>' under 'on'")
        node.next = self._target(value, "next", name, "next")
        node.on_question = self._target(value, "on_question", name, "question")
        if node.on_question is not None and node.slot is not None:
            r.error(value.key_node("on_question"), f"'on_question' belongs to intent menus; a {node.slot} slot "
                                                   "question cannot take a question (use an 'answer' node after it)")
        if self.unsure_slot:
            return
        if node.slot is None:
            if value.get("next") is not None:
                r.error(value.key_node("next"), f"ask node '{name}' asks for intents: use 'on' (intent → node), "
                                                "not 'next' (or add a 'slot')")
            if not node.on:
                r.error(node_pos(node), f"ask node '{name}' needs 'on' (intent → node) or a 'slot' to collect")
        elif node.next is None and not (node.slot == "yes_no" and {"yes", "no"} <= set(node.on)):
            r.error(node_pos(node), f"ask node '{name}' needs 'next': where to go once the {node.slot} is "
                                    "collected")

    def _confirm(self, node: Y, ask: AskNode) -> Confirmation | None:
        r = self.r
        if ask.slot is None or ask.slot == "yes_no":
            r.error(node, "'confirm' reads back a collected digits, number or text slot; this question has none")
            return None
        if node.kind == "map":
            r.check_keys(node, ("prompt", "retries", "no_prompt", "when", "sure_above"), f"'confirm' of '{ask.name}'")
            prompt = self._template(node.get("prompt"), "'prompt'")
            if node.get("prompt") is None:
                r.error(node, "'confirm' needs a 'prompt' such as \"I heard {{ x | digits }}, is that right?\"")
            retries = r.integer(node.get("retries"), "'retries'", 2)
            no_prompt = self._template(node.get("no_prompt"), "'no_prompt'")
            when = r.string(node.get("when"), "'when'", "always") or "always"
            if when not in CONFIRM_WHEN:
                r.error(node.get("when"), f"'when' is 'always' (read every answer back) or 'unsure' (only when "
                                          f"the recognizer was unsure of a word), not '{when}'")
            sure = r.number(node.get("sure_above"), "'sure_above'", Confirmation.sure_above)
            if sure > 1.0:
                r.error(node.get("sure_above"), f"'sure_above' is a word probability between 0 and 1, got {sure:g}")
        else:
            prompt, retries, no_prompt, when, sure = self._template(node, "'confirm'"), 2, None, "always", 0.85
        return Confirmation(prompt, retries, no_prompt, when, sure) if prompt else None

    def _branch_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        cases: list[BranchCase] = []
        if body.kind != "seq":
            r.error(body, f"'branch' must be a list of {{if: <condition>, goto: <node>}}, got {body.describe()}")
        else:
            for item in body.items:
                if not r.is_map(item, "each branch case"):
                    continue
                r.check_keys(item, ("if", "goto"), f"a case of branch '{name}'")
                source = r.string(item.get("if"), "'if'")
                if item.get("if") is None:
                    r.error(item, "a branch case needs 'if': a condition such as order.status == 'shipped'")
                goto = self._target(item, "goto", name, source or "if")
                if item.get("goto") is None:
                    r.error(item, "a branch case needs 'goto': the node to go to when the condition holds")
                if source is None or goto is None:
                    continue
                try:
                    condition = compile_condition(source)
                except TemplateProblem as exc:
                    r.error(item.get("if"), f"bad condition: {exc}")
                    continue
                self.refs.templates.append((item.get("if"), condition))  # type: ignore[arg-type]
                cases.append(BranchCase(condition, goto))
        otherwise = self._target(value, "otherwise", name, "otherwise")
        if otherwise is None:
            r.error(key_node, f"branch node '{name}' needs 'otherwise': where to go when no condition holds")
        return BranchNode(name, key_node.line, key_node.col, cases=tuple(cases), otherwise=otherwise or "")

    def _set_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        values: dict[str, TemplateValue] = {}
        if r.is_map(body, f"'set' of '{name}'"):
            for var, (k_node, v_node) in body.entries.items():
                if not IDENTIFIER.match(var):
                    r.error(k_node, f"variable name '{var}' must be made of letters, digits and '_'")
                    continue
                if var in BUILTIN_VARIABLES:
                    r.error(k_node, f"'{var}' is a built-in variable and cannot be set")
                    continue
                values[var] = self._value(v_node, f"'{var}'")
                self.refs.defined.add(var)
        return SetNode(name, key_node.line, key_node.col, values=values, next=self._next(value, name))

    def _http_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        if not r.is_map(body, f"'http' of '{name}'"):
            return None
        r.check_keys(body, ("method", "url", "headers", "json", "timeout", "retries", "filler", "filler_after",
                            "save_as"), f"http node '{name}'")
        node = HttpNode(name, key_node.line, key_node.col)
        method = (r.string(body.get("method"), "'method'", "GET") or "GET").upper()
        if method not in HTTP_METHODS:
            r.error(body.get("method"), f"'method' must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
        node.method = method
        url = self._template(body.get("url"), "'url'")
        if body.get("url") is None:
            r.error(body, f"http node '{name}' needs a 'url'")
        node.url = url or Template("")
        headers_node = body.get("headers")
        if headers_node is not None and r.is_map(headers_node, "'headers'"):
            for header, (_, h_value) in headers_node.entries.items():
                template = self._template(h_value, f"header '{header}'")
                if template:
                    node.headers[header] = template
        if body.get("json") is not None:
            node.json = self._value(body.get("json"), "'json'")  # type: ignore[arg-type]
        node.timeout = r.number(body.get("timeout"), "'timeout'", 5.0, positive=True)
        node.retries = r.integer(body.get("retries"), "'retries'", 0)
        node.filler = self._template(body.get("filler"), "'filler'")
        node.filler_after = r.number(body.get("filler_after"), "'filler_after'", 1.0)
        node.save_as = r.name(body.get("save_as"), "'save_as'", "result") or "result"
        self.refs.defined.add(node.save_as)
        node.next = self._next(value, name, "next", "ok")
        node.on_failure = self._target(value, "on_failure", name, "failure")
        return node

    def _transfer_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        node = TransferNode(name, key_node.line, key_node.col)
        if body.kind == "scalar":
            body_map: Y | None = None
            queue_node: Y | None = body
        elif r.is_map(body, f"'transfer' of '{name}'"):
            r.check_keys(body, ("queue", "uri", "say", "context", "after_agent"), f"transfer node '{name}'")
            body_map, queue_node = body, body.get("queue")
        else:
            return None
        uri_node = body_map.get("uri") if body_map else None
        if (queue_node is None) == (uri_node is None):
            r.error(body, f"transfer node '{name}' needs exactly one of 'queue' (an agent queue) or 'uri' "
                          "(a SIP URI such as sip:1000@pbx.example.com)")
        node.queue = self._template(queue_node, "'queue'")
        if node.queue is not None and not node.queue.names and queue_node is not None:
            self.refs.queues.append((queue_node, node.queue.source))
        node.uri = self._template(uri_node, "'uri'")
        if node.uri is not None and not node.uri.names and not node.uri.source.startswith(("sip:", "sips:", "tel:")):
            r.error(uri_node, f"'uri' must start with sip:, sips: or tel:, got {node.uri.source!r}")
        if body_map is not None:
            node.say = self._template(body_map.get("say"), "'say'")
            node.after_agent = self._target(body_map, "after_agent", name, "after agent")
            context_node = body_map.get("context")
            if context_node is not None and r.is_map(context_node, "'context'"):
                for key, (_, c_value) in context_node.entries.items():
                    node.context[key] = self._value(c_value, f"context '{key}'")
        return node

    def _record_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        node = RecordNode(name, key_node.line, key_node.col)
        if body.kind == "map":
            r.check_keys(body, ("prompt", "audio", "max_seconds", "end_silence", "terminator", "beep", "save_as"),
                         f"record node '{name}'")
            node.prompt = self._template(body.get("prompt"), "'prompt'")
            node.audio = self._audio(body.get("audio"), "'audio'")
            node.max_seconds = r.number(body.get("max_seconds"), "'max_seconds'", 60.0, positive=True)
            node.end_silence = r.number(body.get("end_silence"), "'end_silence'", 3.0, positive=True)
            node.terminator = self._dtmf_key(body.get("terminator"), "'terminator'") or "#"
            node.beep = r.boolean(body.get("beep"), "'beep'", True)
            node.save_as = r.name(body.get("save_as"), "'save_as'", "recording") or "recording"
        elif not (body.kind == "scalar" and body.scalar in (True, None)):
            node.prompt = self._template(body, "'record'")
        self.refs.defined.add(node.save_as)
        node.next = self._next(value, name)
        return node

    def _recording_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        command = self.r.string(body, "'recording'")
        if command not in ("pause", "resume"):
            if command is not None:
                self.r.error(body, f"'recording' must be 'pause' or 'resume', got '{command}' (to record the "
                                   "caller's message use a 'record' node)")
            return None
        return RecordingNode(name, key_node.line, key_node.col, pause=command == "pause", next=self._next(value, name))

    def _goto_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        return GotoNode(name, key_node.line, key_node.col, target=self._next(value, name, "goto", "goto"))

    def _subflow_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        rel = self.r.string(body, "'subflow'")
        node = SubflowNode(name, key_node.line, key_node.col, path=rel or "", next=self._next(value, name))
        if rel is None:
            return node
        full = (self.path.parent / rel).resolve()
        shown = os.path.normpath(os.path.join(os.path.dirname(self.shown), rel))
        if full in self.chain or full == self.path:
            cycle = " → ".join(p.name for p in (*self.chain, self.path, full))
            self.r.error(body, f"sub-flow cycle: {cycle}; a flow cannot call itself")
            return node
        if not full.is_file():
            self.r.error(body, f"sub-flow file '{rel}' not found (looked for {full}); paths are relative to the "
                               "flow file")
            return node
        flow, diagnostics = compile_file(full, shown, self.known_queues, (*self.chain, self.path), self.cache,
                                         server_queues=self.server_queues, hour_names=self.hour_names)
        self.r.diagnostics.extend(diagnostics)
        if flow is None:
            self.r.error(body, f"sub-flow '{rel}' is invalid; fix the errors reported for {shown}")
        else:
            node.flow = flow
            self.sources.update(flow.sources)
            self.refs.defined.update(flow.defines)  # what the sub-flow sets is visible after it returns
        return node

    def _hangup_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        r = self.r
        node = HangupNode(name, key_node.line, key_node.col)
        if body.kind == "map":
            r.check_keys(body, ("say", "reason"), f"hangup node '{name}'")
            node.say = self._template(body.get("say"), "'say'")
            node.reason = r.string(body.get("reason"), "'reason'", "completed") or "completed"
        elif not (body.kind == "scalar" and body.scalar in (True, None)):
            node.say = self._template(body, "'hangup'")
        return node

    def _answer_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        node = AnswerNode(name, key_node.line, key_node.col, next=self._next(value, name))
        if not (body.kind == "scalar" and body.scalar in (True, None)):
            node.question = self._template(body, "'answer'")
        node.otherwise = self._target(value, "otherwise", name, "unanswered") or ""
        if value.get("otherwise") is None:
            self.broken_links = True
            self.r.error(key_node, f"answer node '{name}' needs 'otherwise': where to go when the knowledge file "
                                   "has no answer (e.g. an agent)")
        return node

    def _return_node(self, name: str, key_node: Y, value: Y, body: Y) -> Node | None:
        if not (body.kind == "scalar" and body.scalar in (True, None)):
            self.r.error(body, "write a return node as 'return: true'")
        return ReturnNode(name, key_node.line, key_node.col)

    # ---- pass two ----------------------------------------------------------------------------------

    def _check_references(self, nodes: dict[str, Node], nodes_node: Y | None, variables: dict[str, object],
                          start: str, globals_: Globals) -> None:
        r = self.r
        edges: dict[str, list[str]] = {name: [] for name in nodes}
        for at, target, from_node, _label in self.refs.targets:
            if target in nodes or target in self.failed_nodes:
                if from_node in edges:
                    edges[from_node].append(target)
                continue
            where = f" ({_label} of '{from_node}')" if from_node else f" ({_label})"
            self.broken_links = True
            if nodes_node is not None:
                r.error(at, f"node '{target}' does not exist{where}{did_you_mean(target, nodes)}")
        for at, intent in self.refs.intents:
            if intent not in self.intents:
                hint = did_you_mean(intent, self.intents) or (
                    " (define it under 'intents:' with examples)" if self.intents else
                    " (the flow has no 'intents:' section)")
                r.error(at, f"undefined intent '{intent}'{hint}")
        known = BUILTIN_VARIABLES | set(variables) | self.refs.defined
        for at, template in self.refs.templates:
            names = template.names if isinstance(template, Template) else template.names()
            for missing in sorted(names - known):
                r.error(at, f"undefined variable '{missing}'{did_you_mean(missing, known)}; set it with a 'set' "
                            "node, a slot's 'save_as', an http 'save_as' or the flow's 'variables:'")
        self._check_hours()
        self._check_knowledge(nodes, known, edges)
        if self.declared_queues or self.server_queues is not None:
            where = "the queues file has" if self.server_queues is not None else "known queues"
            for at, queue in self.refs.queues:
                if queue not in self.declared_queues:
                    r.error(at, f"unknown queue '{queue}'{did_you_mean(queue, self.declared_queues)}; {where}: "
                                f"{', '.join(sorted(self.declared_queues)) or 'none'}")
        self._check_subflows(nodes)
        if start not in nodes or self.broken_links:
            return
        seen: set[str] = set()
        todo = [start, *[root for root in self.refs.roots if root in nodes]]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(edges.get(current, []))
        for node in nodes.values():
            if node.name not in seen:
                r.diagnostics.append(Diagnostic(self.shown, node.line, node.col,
                                                f"node '{node.name}' is unreachable: nothing leads to it from "
                                                f"start '{start}' (link it or remove it)"))
        self._check_graph(nodes)

    def _check_knowledge(self, nodes: dict[str, Node], known: frozenset[str] | set[str],
                         edges: dict[str, list[str]]) -> None:
        """Answer nodes and ``on_question`` need a knowledge file; its answers may use only the flow's
        variables and its ``follow_up`` nodes must exist (reported at their place in the knowledge file)."""
        users = [n for n in nodes.values() if isinstance(n, AnswerNode) or (isinstance(n, AskNode) and n.on_question)]
        if self.knowledge is None:
            if not self.knowledge_failed:
                for n in users:
                    what = "answer node" if isinstance(n, AnswerNode) else "'on_question' of"
                    self.r.error(node_pos(n), f"{what} '{n.name}' needs a knowledge file: add 'knowledge: "
                                              "faq.yaml' at the top of the flow (see docs/flows.md)")
            return
        kb = self.knowledge
        for entry in kb.entries.values():
            for missing in sorted(entry.answer.names - known):
                self.r.diagnostics.append(Diagnostic(
                    kb.path, *entry.answer_at, f"undefined variable '{missing}' in the answer of '{entry.name}'"
                                               f"{did_you_mean(missing, known)}; the flow '{self.shown}' does not "
                                               "define it"))
            if entry.follow_up and entry.follow_up not in nodes and entry.follow_up not in self.failed_nodes:
                self.broken_links = True
                self.r.diagnostics.append(Diagnostic(
                    kb.path, *entry.follow_up_at, f"'follow_up' of '{entry.name}': node '{entry.follow_up}' does "
                                                  f"not exist in {self.shown}{did_you_mean(entry.follow_up, nodes)}"))
            elif entry.follow_up:
                for n in users:  # an answer may lead to its follow-up
                    edges.setdefault(n.name, []).append(entry.follow_up)

    def _check_graph(self, nodes: dict[str, Node]) -> None:
        """Loops the call can never leave without waiting for the caller."""
        for loop in loops_without_wait(nodes):
            first = nodes[loop[0]]
            self.r.diagnostics.append(Diagnostic(
                self.shown, first.line, first.col,
                f"node '{first.name}' starts a loop that never waits for the caller ({' → '.join(loop)}); add an "
                "ask, or a way out (the call would end in an error after 200 steps)"))

    def _check_hours(self) -> None:
        """Each ``open('name')`` names a calendar or queue of the server's queues file (when it is known)."""
        if self.hour_names is None:
            return
        for at, template in self.refs.templates:
            names = template.calendars if isinstance(template, Template) else template.calendars()
            for name in sorted(names - self.hour_names):
                self.r.error(at, f"open('{name}'): no calendar or queue '{name}'"
                                 f"{did_you_mean(name, self.hour_names)}; the queues file has: "
                                 f"{', '.join(sorted(self.hour_names)) or 'none'} (define it under calendars:)")

    def _check_subflows(self, nodes: dict[str, Node]) -> None:
        """A sub-flow that returns needs 'next'; one whose 'return' cannot be reached from its start makes
        its 'next' dead code."""
        for node in nodes.values():
            if not isinstance(node, SubflowNode) or node.flow is None:
                continue
            sub = node.flow
            if node.next and not subflow_returns(sub):
                self.r.diagnostics.append(Diagnostic(
                    self.shown, node.line, node.col,
                    f"sub-flow '{node.path}' never returns: no 'return' node is reachable from its start "
                    f"'{sub.start}', so 'next: {node.next}' of '{node.name}' can never run; remove 'next' or "
                    "add a return"))
            elif not node.next and subflow_returns(sub):
                self.broken_links = True
                self.r.diagnostics.append(Diagnostic(
                    self.shown, node.line, node.col,
                    f"subflow node '{node.name}' needs 'next': the node to go to when '{node.path}' returns"))


def node_pos(node: Node) -> Y:
    """A position-only Y for a compiled node (errors about the node as a whole)."""
    return Y("scalar", node.line, node.col)


def compile_file(path: Path, shown: str, known_queues: frozenset[str], chain: tuple[Path, ...],
                 cache: FlowCache, intents_only: bool = False,
                 server_queues: frozenset[str] | None = None,
                 hour_names: frozenset[str] | None = None) -> tuple[Flow | None, list[Diagnostic]]:
    """Compile one file (cached per load so a sub-flow used twice is read once).

    ``known_queues`` add to the flow's own ``queues:``; ``server_queues`` (the names of the server's queues
    file) replace them: every queue the flow names, its ``queues:`` list included, must be one of them.
    ``hour_names`` (the queues file's calendars and queues): the names ``open('…')`` may take."""
    key = path.resolve()
    if key in cache and not intents_only:
        return cache[key]
    result = FlowCompiler(key, shown, known_queues, chain, cache, intents_only, server_queues, hour_names).compile()
    if not intents_only:
        cache[key] = result
    return result
