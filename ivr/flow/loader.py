"""Load flow files: check them (all problems at once) and build each flow's intent classifier."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ivr.errors import Diagnostic, FlowError, ModelError
from ivr.flow.compiler import compile_file
from ivr.flow.fields import normalize_utterance as normalize_utterance
from ivr.flow.schema import Flow
from ivr.nlu.types import IntentClassifier

ClassifierFactory = Callable[[dict[str, list[str]], float], IntentClassifier]
"""``build_classifier(examples, threshold)``: how a flow's intents become a classifier."""


def default_classifier_factory(examples: dict[str, list[str]], threshold: float) -> IntentClassifier:
    """The project's intent classifier (``ivr.nlu.intents.build_classifier``), imported on first use."""
    try:
        module = importlib.import_module("ivr.nlu.intents")
    except ModuleNotFoundError as exc:
        raise ModelError("the intent classifier (ivr.nlu.intents) is not installed; reinstall ivr") from exc
    build: ClassifierFactory = module.build_classifier
    return build(examples, threshold)


def check_flow(path: str | Path, known_queues: Iterable[str] = (),
               server_queues: Iterable[str] | None = None, hour_names: Iterable[str] | None = None) -> list[Diagnostic]:
    """Every problem of a flow file and its sub-flows (empty when valid). Builds no classifier."""
    _, diagnostics = compile_file(Path(path), str(path), frozenset(known_queues), (), {},
                                  server_queues=_frozen(server_queues), hour_names=_frozen(hour_names))
    return diagnostics


def _frozen(names: Iterable[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(names)


def load_flow(path: str | Path, known_queues: Iterable[str] = (),
              classifier_factory: ClassifierFactory | None = default_classifier_factory,
              server_queues: Iterable[str] | None = None, hour_names: Iterable[str] | None = None) -> Flow:
    """Check and compile a flow file, then build the classifier of it and of each sub-flow.

    Raises FlowError listing every problem. ``known_queues`` adds to the flow's own ``queues:`` for the
    unknown-queue check; ``server_queues`` (the queues file's names) is the only list that counts when
    given; ``hour_names`` (its calendars and queues) are the names ``open('…')`` may take.
    ``classifier_factory=None`` skips classifiers (e.g. for drawing a graph).
    """
    flow, diagnostics = compile_file(Path(path), str(path), frozenset(known_queues), (), {},
                                     server_queues=_frozen(server_queues), hour_names=_frozen(hour_names))
    if flow is None:
        raise FlowError(diagnostics)
    if classifier_factory is not None:
        _attach_classifiers(flow, classifier_factory, set())
    return flow


def _attach_classifiers(flow: Flow, factory: ClassifierFactory, done: set[int]) -> None:
    if id(flow) in done:
        return
    done.add(id(flow))
    if flow.intents and flow.classifier is None:
        flow.classifier = factory({k: list(v) for k, v in flow.intents.items()}, flow.intent_threshold)
    if flow.knowledge is not None and flow.knowledge.matcher is None:
        flow.knowledge.matcher = knowledge_matcher(flow.knowledge.examples(), flow.knowledge.threshold, factory)
    for sub in flow.subflows():
        _attach_classifiers(sub, factory, done)


_MatcherKey = tuple[ClassifierFactory, tuple[tuple[str, tuple[str, ...]], ...], float]
_matchers: dict[_MatcherKey, IntentClassifier] = {}
_matchers_lock = threading.Lock()
MATCHER_CACHE_SIZE = 32


def knowledge_matcher(examples: dict[str, list[str]], threshold: float,
                      factory: ClassifierFactory = default_classifier_factory) -> IntentClassifier:
    """The matcher of a knowledge file's entries (one "intent" per entry), embedded once per content: a
    reload of a flow whose knowledge did not change, or a second flow with the same file, reuses it."""
    key: _MatcherKey = (factory, tuple((k, tuple(v)) for k, v in examples.items()), threshold)
    with _matchers_lock:
        cached = _matchers.get(key)
    if cached is not None:
        return cached
    matcher = factory(examples, threshold)
    with _matchers_lock:
        _matchers[key] = matcher
        while len(_matchers) > MATCHER_CACHE_SIZE:
            del _matchers[next(iter(_matchers))]
    return matcher


@dataclass(frozen=True)
class IntentSpec:
    """The intents part of a flow file (or of an intents-only file): for evaluating and building models."""

    name: str
    language: str
    examples: dict[str, list[str]]
    threshold: float


def load_intents(path: str | Path) -> IntentSpec:
    """Read ``version``, ``name``, ``language``, ``intents`` and ``intent_threshold`` of a file (a whole
    flow or a file with only those keys). Raises FlowError on problems in those keys."""
    flow, diagnostics = compile_file(Path(path), str(path), frozenset(), (), {}, intents_only=True)
    if flow is None:
        raise FlowError(diagnostics)
    if not flow.intents:
        raise FlowError([Diagnostic(str(path), 0, 0, "no intents defined; add an 'intents:' section")])
    return IntentSpec(flow.name, flow.language, {k: list(v) for k, v in flow.intents.items()},
                      flow.intent_threshold)

