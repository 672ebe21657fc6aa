"""Knowledge files: matching callers' questions, checking the file, hot reload, answering in a call, the report."""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ivr.cli.flows import flows
from ivr.flow.actions import KnowledgeLookup, Transfer
from ivr.flow.knowledge import Knowledge, compile_knowledge
from ivr.flow.loader import check_flow, knowledge_matcher, load_flow
from ivr.flow.registry import FlowRegistry
from ivr.flow.testing import KeywordClassifier, ScriptedCall

ROOT = Path(__file__).resolve().parent.parent
HOTLINE_KB = ROOT / "flows" / "knowledge" / "hotline.yaml"
PARAPHRASES = ROOT / "tests" / "data" / "faq_paraphrases.csv"


def _hotline_knowledge() -> Knowledge:
    knowledge, diagnostics = compile_knowledge(HOTLINE_KB, "flows/knowledge/hotline.yaml")
    assert knowledge is not None, diagnostics
    return knowledge


def score_paraphrases(threshold: float | None = None) -> dict[str, Any]:
    """Right / wrong / unanswered counts of the held-out paraphrases (none is a variant of an entry)."""
    knowledge = _hotline_knowledge()
    matcher = knowledge_matcher(knowledge.examples(), knowledge.threshold if threshold is None else threshold)
    counts = {"right": 0, "wrong": 0, "unanswered": 0, "off_topic_unanswered": 0, "off_topic_answered": 0}
    misses: list[str] = []
    with PARAPHRASES.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            match = matcher.classify(row["text"])
            if not row["entry"]:
                counts["off_topic_unanswered" if match.intent is None else "off_topic_answered"] += 1
                if match.intent is not None:
                    misses.append(f"{row['text']!r} answered with {match.intent} ({match.confidence:.2f})")
                continue
            outcome = "unanswered" if match.intent is None else "right" if match.intent == row["entry"] else "wrong"
            counts[outcome] += 1
            if outcome != "right":
                misses.append(f"{row['text']!r} → {match.intent} ({match.ranked[0]}), expected {row['entry']}")
    return {**counts, "misses": misses}


# ------------------------------------------------------------------------------------------ matching


def test_paraphrases_hit_their_entry_and_unrelated_questions_are_unanswered() -> None:
    result = score_paraphrases()
    print(f"\nknowledge accuracy at the hotline threshold: {result}")
    assert result["right"] >= 27 and result["wrong"] == 0, result["misses"]
    assert result["off_topic_answered"] == 0, result["misses"]


def test_an_exact_variant_answers_without_the_model() -> None:
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml", classifier_factory=KeywordClassifier.build))
    call.say("What is your returns policy?")
    lookup = next(a for a in call.actions if isinstance(a, KnowledgeLookup))
    assert (lookup.entry, lookup.confidence) == ("returns", 1.0)


def test_the_matcher_is_embedded_once_per_content() -> None:
    examples = {"a": ["what time do you open"], "b": ["do you ship abroad"]}
    assert knowledge_matcher(examples, 0.4, KeywordClassifier.build) is knowledge_matcher(
        dict(examples), 0.4, KeywordClassifier.build)
    assert knowledge_matcher(examples, 0.5, KeywordClassifier.build) is not knowledge_matcher(
        examples, 0.4, KeywordClassifier.build)


# ------------------------------------------------------------------------------------------ in a call


def test_a_question_at_the_main_menu_is_answered_and_its_follow_up_runs() -> None:
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml"))
    call.say("what is your returns policy")
    said = call.said()
    assert said[-2].startswith("You can return any unused item within 30 days")
    assert said[-1] == "Would you like an agent to help you start a return?"  # the entry's follow_up
    call.say("no thanks")
    assert call.said()[-1] == "Is there anything else I can help you with?"
    assert call.interpreter.variables["last_answer"] == "returns"


def test_a_paraphrased_question_gets_its_answer_and_the_flow_goes_on() -> None:
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml"))
    call.say("I have a question")
    assert call.said()[-1] == "Sure. What would you like to know?"
    call.say("which cards do you take")
    assert call.said()[-2].startswith("We accept Visa, Mastercard")
    assert call.said()[-1] == "Is there anything else I can help you with?"


def test_an_unanswered_question_goes_to_an_agent_and_is_reported() -> None:
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml"))
    call.say("I have a question")
    call.say("do you sell car insurance")
    lookup = next(a for a in call.actions if isinstance(a, KnowledgeLookup))
    assert lookup.entry is None and lookup.question == "do you sell car insurance" and lookup.node == "answer_question"
    assert isinstance(call.transfer, Transfer) and call.transfer.queue == "support"
    assert "I don't have the answer to that" in " ".join(call.said())


def test_an_intent_still_wins_over_the_knowledge_and_menu_no_matches_are_reported() -> None:
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml"))
    call.say("where is my order")
    assert call.interpreter.current_node == "order_number"
    call = ScriptedCall(load_flow(ROOT / "flows" / "hotline.yaml"))
    call.say("who won the football game last night")
    lookups = [a for a in call.actions if isinstance(a, KnowledgeLookup)]
    assert [(a.node, a.entry) for a in lookups] == [("main_menu", None)]
    assert call.interpreter.current_node == "main_menu"  # asked again, as any no-match


# ------------------------------------------------------------------------------------------ checking

BROKEN = """\
version: 1
threshold: 1.5
entries:
  hours:
    questions:
      - when are you open
      - "  "
      - "?!"
    answer: "We are open {{ hourz }}."
  hours_again:
    questions: [When are you OPEN?]
    answer: "Nine to five."
  no_answer:
    questions: [do you ship abroad]
  nothing_asked:
    questions: []
    answer: "Hello."
  typo:
    questions: [where are you]
    answr: "Main street."
"""


def test_a_broken_knowledge_file_reports_every_problem_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "faq.yaml"
    path.write_text(BROKEN)
    knowledge, diagnostics = compile_knowledge(path, "faq.yaml")
    assert knowledge is None
    assert [str(d) for d in diagnostics] == [
        "faq.yaml:2:12: 'threshold' is a confidence between 0 and 1, got 1.5",
        "faq.yaml:7:9: each item of 'questions' of 'hours' must be a non-empty string, got the string '  '",
        "faq.yaml:8:9: question '?!' of 'hours' has no words",
        "faq.yaml:11:17: duplicate question 'When are you OPEN?': already asked in entry 'hours' (line 6); keep it "
        "in one entry only",
        "faq.yaml:13:3: entry 'no_answer' has no 'answer': write what the bot says to these questions",
        "faq.yaml:16:16: entry 'nothing_asked' has an empty 'questions' list; list 3 to 10 ways callers ask it",
        "faq.yaml:18:3: entry 'typo' has no 'answer': write what the bot says to these questions",
        "faq.yaml:20:5: unknown key 'answr' in entry 'typo' (did you mean 'answer'?)",
    ]


FLOW = """\
version: 1
name: shop
start: menu
knowledge: {knowledge}
queues: [support]
intents:
  agent: {{examples: [agent, a person]}}
nodes:
  menu:
    ask: {{prompt: "How can I help?"}}
    on: {{agent: to_agent}}
    on_question: answer
    otherwise: to_agent
  answer:
    answer: true
    next: menu
    otherwise: to_agent
  to_agent:
    transfer: support
"""

FAQ = """\
version: 1
entries:
  hours:
    questions: [when are you open, what are your opening hours]
    answer: "{answer}"
    follow_up: {follow_up}
"""


def _shop(tmp: Path, answer: str = "Nine to five.", follow_up: str = "menu") -> Path:
    (tmp / "knowledge").mkdir(exist_ok=True)
    (tmp / "knowledge" / "faq.yaml").write_text(FAQ.format(answer=answer, follow_up=follow_up))
    flow = tmp / "shop.yaml"
    flow.write_text(FLOW.format(knowledge="knowledge/faq.yaml"))
    return flow


def test_the_flow_checks_answers_and_follow_ups_against_its_nodes_and_variables(tmp_path: Path) -> None:
    flow = _shop(tmp_path, answer="Open {{ hourz }}.", follow_up="menuu")
    shown = str(tmp_path / "knowledge" / "faq.yaml")
    assert [str(d) for d in check_flow(flow)] == [
        f"{shown}:5:13: undefined variable 'hourz' in the answer of 'hours'; the flow '{flow}' does not define it",
        f"{shown}:6:16: 'follow_up' of 'hours': node 'menuu' does not exist in {flow} (did you mean 'menu'?)",
    ]


def test_a_missing_or_invalid_knowledge_file_and_answer_nodes_without_one(tmp_path: Path) -> None:
    flow = tmp_path / "shop.yaml"
    flow.write_text(FLOW.format(knowledge="faq.yaml"))
    assert [str(d).split(" (looked")[0] for d in check_flow(flow)] == [
        f"{flow}:4:12: knowledge file 'faq.yaml' not found"]
    (tmp_path / "faq.yaml").write_text("version: 1\nentries:\n  x: {questions: [hi there]}\n")
    assert [str(d) for d in check_flow(flow)] == [
        f"{flow}:4:12: knowledge file 'faq.yaml' is invalid; fix the errors reported for {tmp_path}/faq.yaml",
        f"{tmp_path}/faq.yaml:3:3: entry 'x' has no 'answer': write what the bot says to these questions",
    ]
    flow.write_text(FLOW.format(knowledge="faq.yaml").replace("knowledge: faq.yaml\n", ""))
    assert [str(d) for d in check_flow(flow)] == [
        f"{flow}:8:3: 'on_question' of 'menu' needs a knowledge file: add 'knowledge: faq.yaml' at the top of the "
        "flow (see docs/flows.md)",
        f"{flow}:13:3: answer node 'answer' needs a knowledge file: add 'knowledge: faq.yaml' at the top of the "
        "flow (see docs/flows.md)",
    ]


def test_cli_validates_knowledge_files_and_the_demo(tmp_path: Path) -> None:
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        result = runner.invoke(flows, ["validate", "flows/knowledge/hotline.yaml", "flows/hotline.yaml"])
        assert result.exit_code == 0, result.output
        broken = tmp_path / "faq.yaml"
        broken.write_text(BROKEN)
        result = runner.invoke(flows, ["validate", str(broken)])
        assert result.exit_code == 1
        assert f"{broken}:13:3: entry 'no_answer' has no 'answer'" in result.output
    finally:
        os.chdir(old)


# ------------------------------------------------------------------------------------------ hot reload


def _touch_later(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:  # same clock tick: make the change visible
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_editing_the_knowledge_file_takes_effect_and_a_broken_edit_keeps_the_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _shop(tmp_path)
    registry = FlowRegistry(tmp_path, classifier_factory=KeywordClassifier.build)

    def answer() -> str:
        call = ScriptedCall(registry.get("shop"))
        call.say("when are you open")
        return call.said()[-2]

    assert answer() == "Nine to five."
    faq = tmp_path / "knowledge" / "faq.yaml"
    _touch_later(faq, FAQ.format(answer="Eight to eight.", follow_up="menu"))
    assert registry.refresh() == ["shop"]
    assert answer() == "Eight to eight."
    _touch_later(faq, FAQ.format(answer="Eight to eight.", follow_up="menu").replace("    answer:", "    answr:"))
    assert registry.refresh() == []
    assert answer() == "Eight to eight."  # the last good version keeps answering
    errors = [str(d) for d in registry.errors[str(tmp_path / "shop.yaml")]]
    assert any(e.startswith(f"{tmp_path}/knowledge/faq.yaml:3:3: entry 'hours' has no 'answer'") for e in errors)
    assert "keeping the last good version of 'shop'" in caplog.text
    assert registry.refresh() == []  # not parsed again until it changes
    _touch_later(faq, FAQ.format(answer="Ten to six.", follow_up="menu"))
    assert registry.refresh() == ["shop"] and answer() == "Ten to six."


# ------------------------------------------------------------------------------------------ the report


def test_unanswered_questions_are_counted_most_frequent_first(tmp_path: Path) -> None:
    from ivr.store import open_store

    store = open_store(tmp_path / "ivr.db")
    asked = [("c1", 100.0, "Do you sell car insurance?"), ("c2", 110.0, "do you sell car insurance"),
             ("c3", 120.0, "Can I bring my dog"), ("c3", 121.0, "do you sell CAR insurance"),
             ("c4", 500.0, "do you sell car insurance")]  # outside the window
    for call_id, at, question in asked:
        store.add_event(call_id, at, "faq_unanswered", {"question": question, "best": "payment_methods",
                                                         "confidence": 0.1, "node": "answer_question"})
    store.add_event("c1", 105.0, "faq_answered", {"question": "when are you open", "entry": "opening_hours"})
    top = store.unanswered_questions(0.0, 200.0)
    assert [(q["question"], q["count"], q["calls"]) for q in top] == [
        ("do you sell car insurance", 3, 3), ("can i bring my dog", 1, 1)]
    assert top[0]["examples"] == ["Do you sell car insurance?", "do you sell car insurance",
                                  "do you sell CAR insurance"]
    assert top[0]["closest"] == "payment_methods"
    assert len(store.unanswered_questions(0.0, 200.0, limit=1)) == 1
    store.close()


def test_the_session_records_questions_masked_as_call_events() -> None:
    from ivr.call import CallSession
    from ivr.call import events as ev
    from ivr.flow import actions as fa
    from ivr.replay.channel import ReplayChannel
    from ivr.services import SpeechServices
    from ivr.testing.fakes import FakeAsr, FakeTts

    class Flow:
        finished = False

        def start(self) -> list[fa.FlowAction]:
            return [fa.KnowledgeLookup("can I pay with card 4111 1111 1111 1111", "ask", None, "payment_methods", 0.2),
                    fa.KnowledgeLookup("when are you open", "ask", "opening_hours", "opening_hours", 1.0),
                    fa.Hangup()]

        def handle(self, event: object) -> list[fa.FlowAction]:
            return []

        def context(self) -> dict[str, Any]:
            return {}

        def resume_at(self, node: str) -> list[fa.FlowAction]:
            return []

    written: list[tuple[str, dict[str, Any]]] = []

    class Store:
        def __getattr__(self, name: str) -> Callable[..., None]:
            def write(*args: Any) -> None:
                if name == "add_event":
                    written.append((args[2], args[3]))
            return write

    services = SpeechServices(asr=FakeAsr(()), tts=FakeTts())
    try:
        seen: list[ev.CallEvent] = []

        class Observer:
            def on_event(self, event: ev.CallEvent) -> None:
                seen.append(event)

        channel = ReplayChannel([], {}, 8000, max_seconds=10)
        CallSession(channel, Flow(), services, store=Store(), observer=Observer()).run()  # type: ignore[arg-type]
    finally:
        services.shutdown()
    kinds = {kind: data for kind, data in written if kind.startswith("faq_")}
    assert kinds["faq_unanswered"]["question"] == "can I pay with card **** **** **** 1111"
    assert kinds["faq_answered"]["entry"] == "opening_hours"
    assert [type(e).__name__ for e in seen if e.name.startswith("faq_")] == ["QuestionUnanswered", "QuestionAnswered"]


# ------------------------------------------------------------------------------------------ real speech


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox make the caller's audio")
def test_a_spoken_question_is_answered_through_whisper(tmp_path: Path, espeak_wav: Callable[..., Path]) -> None:
    from ivr.testing.replay import run_scenario

    wav = espeak_wav("What is your returns policy?", rate=16000, speed=150, lead=0.3, tail=0.8)
    shutil.copy(wav, tmp_path / "returns.wav")
    scenario = tmp_path / "returns.yaml"
    scenario.write_text(f"""\
name: returns_question
flow: {ROOT}/flows/hotline.yaml
rate: 16000
steps:
  - bot: "how can i help you today"
  - say: returns.wav
  - bot: ["return any unused item within 30 days", "help you start a return"]
""")
    started = time.perf_counter()
    report = run_scenario(scenario)
    assert report.passed, report.failures
    assert time.perf_counter() - started < 120


def test_fixing_a_knowledge_file_that_was_broken_from_the_start_loads_the_flow(tmp_path: Path) -> None:
    _shop(tmp_path)
    faq = tmp_path / "knowledge" / "faq.yaml"
    good = faq.read_text()
    faq.write_text(good.replace("    answer:", "    answr:"))
    (tmp_path / "other.yaml").write_text("version: 1\nname: other\nstart: bye\nnodes:\n  bye: {hangup: true}\n")
    registry = FlowRegistry(tmp_path, classifier_factory=KeywordClassifier.build, strict=False)
    assert str(tmp_path / "shop.yaml") in registry.errors
    _touch_later(faq, good)
    assert registry.refresh() == ["shop"] and not registry.errors
