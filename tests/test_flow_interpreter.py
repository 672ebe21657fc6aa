"""The call interpreter on scripted events: the demo hotline end to end, retries, agents, HTTP failures,
confirmations, errors, and every node type."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ivr import events
from ivr.flow.actions import Hangup, HttpRequest, Listen, Record, Say, Transfer
from ivr.flow.interpreter import CallInterpreter
from ivr.flow.loader import load_flow
from ivr.flow.schema import Flow
from ivr.flow.testing import KeywordClassifier, ScriptedCall
from ivr.nlu.types import IntentMatch

ROOT = Path(__file__).resolve().parent.parent
ORDER = {"order": "12345", "status": "shipped", "shipped_on": "Monday", "eta": "Thursday"}


@pytest.fixture(scope="module")
def hotline() -> Flow:
    return load_flow(ROOT / "flows" / "hotline.yaml", classifier_factory=KeywordClassifier.build)


def found(request: HttpRequest) -> events.HttpResult:
    return events.HttpResult(ok=True, status=200, data=ORDER)


def call(flow: Flow, **kwargs: object) -> ScriptedCall:
    return ScriptedCall(flow, http=kwargs.pop("http", found), **kwargs)  # type: ignore[arg-type]


def test_greeting_then_main_menu_question(hotline: Flow) -> None:
    c = call(hotline)
    assert c.said()[0] == "Thanks for calling Acme."
    assert c.said()[1].startswith("How can I help you today?")
    listen = c.listening
    assert listen is not None and listen.speech and listen.dtmf and listen.dtmf_max_digits == 1
    assert listen.no_input_timeout == 6.0
    assert c.interpreter.current_node == "main_menu"


def test_order_status_by_speech_happy_path(hotline: Flow) -> None:
    c = call(hotline, call_vars={"api_base": "http://orders.test"})
    c.say("hi I'd like to know where my order is")
    assert c.said()[-1] == "Sure. Please say or key in your order number, then press pound."
    c.say("one two three four five")
    assert c.said()[-1] == "I heard 1 2 3 4 5. Is that right?"
    c.say("yes that's right")
    [request] = c.requests
    assert request.method == "GET" and request.url == "http://orders.test/orders/12345"
    assert request.filler == "One moment while I look that up." and request.retries == 1
    assert "Good news. Order 1 2 3 4 5 shipped on Monday and should arrive by Thursday." in c.said()
    assert c.said()[-1] == "Is there anything else I can help you with?"
    c.say("no thanks")
    c.say("I'd give it a five")
    assert c.said()[-1] == "Thank you! We're glad we could help. Goodbye."
    assert c.hangup == Hangup("completed") and c.finished
    ctx = c.interpreter.context()
    assert ctx["slots"] == {"order": "12345", "more_help": False, "satisfaction": 5}
    assert ctx["intent"] == "order_status" and ctx["outcome"] == "completed"
    assert ctx["path"][:4] == ["greeting", "main_menu", "order_number", "lookup_order"]


def test_order_number_keyed_and_satisfaction_keyed(hotline: Flow) -> None:
    c = call(hotline)
    c.press("1")
    listen = c.listening
    assert listen is not None and listen.dtmf_max_digits == 10 and listen.dtmf_terminator == "#"
    c.press("98765#")
    assert c.said()[-1] == "I heard 9 8 7 6 5. Is that right?"
    c.press("1")  # 1 = yes
    assert c.requests[-1].url.endswith("/orders/98765")
    c.say("no")
    c.press("2")
    assert c.said()[-1].startswith("Thank you for the feedback")
    assert c.interpreter.context()["slots"]["satisfaction"] == 2


def test_confirmation_no_asks_again(hotline: Flow) -> None:
    c = call(hotline)
    c.say("track my package")
    c.say("four five six seven")
    c.say("no that's wrong")
    assert c.said()[-2:] == ["Sorry about that. Let's try again.",
                             "Sure. Please say or key in your order number, then press pound."]
    assert "order" not in c.interpreter.context()["slots"]
    c.say("four five six eight")
    c.say("yes")
    assert c.requests[-1].url.endswith("/orders/4568")


def test_no_input_tapered_prompts_then_fallback_to_agent(hotline: Flow) -> None:
    c = call(hotline)
    c.silence()
    assert c.said()[-2:] == ["Sorry, I didn't hear anything.", c.said()[1]]
    c.silence()
    assert c.said()[-2].startswith("I still can't hear you. If you're on a keypad")
    assert c.listening is not None
    c.silence()
    assert c.transfer is not None and c.transfer.queue == "support"
    assert c.said()[-1] == "Let me connect you with an agent. Please hold."
    assert [u.get("no_input") for u in c.interpreter.context()["utterances"]] == [True, True, True]  # type: ignore[union-attr]


def test_no_match_tapered_prompts_then_otherwise(hotline: Flow) -> None:
    c = call(hotline)
    c.say("purple elephants")
    assert c.said()[-2] == "Sorry, I didn't catch that."
    c.press("7")  # an unmapped key is a no-match too
    assert c.said()[-2] == "I'm still not sure what you need. Let's try the keypad."
    c.say("bananas")
    assert c.transfer is not None and c.transfer.queue == "support"
    assert c.transfer.context["intent"] is None


def test_agent_request_anywhere_transfers_with_context(hotline: Flow) -> None:
    c = call(hotline, call_vars={"caller": "+4915112345678"})
    c.say("where is my order")
    c.say("can I talk to someone")  # answers the order-number question with an agent request
    transfer = c.transfer
    assert transfer is not None and transfer.queue == "support"
    ctx = transfer.context
    assert ctx["caller"] == "+4915112345678" and ctx["reason"] == "agent"
    assert ctx["intent"] == "agent" and ctx["path"][-1] == "to_agent"
    assert [u["text"] for u in ctx["utterances"]] == ["where is my order", "can I talk to someone"]  # type: ignore[index, union-attr]


def test_agent_key_zero_in_menu(hotline: Flow) -> None:
    c = call(hotline)
    c.press("0")
    assert c.transfer is not None and c.transfer.queue == "support"


def test_billing_offer_yes_goes_to_billing_queue(hotline: Flow) -> None:
    c = call(hotline)
    c.press("2")
    assert c.said()[-2].startswith("Invoices are emailed")
    c.say("yeah")
    assert c.transfer is not None and c.transfer.queue == "billing"
    assert c.transfer.context["reason"] == "billing question"


def test_http_not_found_offers_another_number(hotline: Flow) -> None:
    c = call(hotline, http=lambda r: events.HttpResult(ok=False, status=404, error="not found"))
    c.say("order status")
    c.say("1 2 3 4")
    c.say("yes")
    assert c.said()[-2:] == ["I couldn't find an order with the number 1 2 3 4.",
                             "Would you like to try another order number?"]
    c.say("no")
    assert c.said()[-1] == "Is there anything else I can help you with?"


def test_http_failure_goes_to_orders_team_with_the_order(hotline: Flow) -> None:
    c = call(hotline, http=lambda r: events.HttpResult(ok=False, status=0, error="timed out"))
    c.say("order status")
    c.press("5555#")
    c.press("1")
    assert "Sorry, our order system isn't answering right now." in c.said()
    assert c.transfer is not None and c.transfer.queue == "orders"
    assert c.transfer.context["order"] == "5555" and c.transfer.context["reason"] == "order lookup"


def test_template_failure_at_runtime_apologises_and_transfers(hotline: Flow) -> None:
    c = call(hotline, http=lambda r: events.HttpResult(ok=True, status=200, data={"status": "shipped"}))
    c.say("order status")
    c.say("1 2 3 4")
    c.say("yes")  # the reply lacks shipped_on: the prompt template fails
    assert c.said()[-1] == ("Sorry, something went wrong on our side. Let me transfer you to someone who can "
                            "help.")
    transfer = c.transfer
    assert transfer is not None and transfer.queue == "support"
    assert "shipped_on" in str(transfer.context["error"]) and c.interpreter.outcome == "fallback"


def test_survey_out_of_range_reprompts(hotline: Flow) -> None:
    c = call(hotline)
    c.press("2")
    c.say("no")
    c.say("no")
    c.say("seven")
    assert c.said()[-2] == "Sorry, I need a number from 1 to 5."
    c.say("three")
    assert c.said()[-1].startswith("Thank you for the feedback")


def test_caller_hangup_ends_quietly(hotline: Flow) -> None:
    c = call(hotline)
    assert c.hang_up() == []
    assert c.finished and c.interpreter.outcome == "caller_hangup"
    assert c.say("hello?") == []


def test_partial_transcripts_and_stray_events_are_ignored(hotline: Flow) -> None:
    c = call(hotline)
    assert c.send(events.Transcript("where is", 0.5, final=False)) == []
    assert c.send(events.PlaybackFinished()) == []
    assert c.send(events.HttpResult(ok=True)) == []
    assert c.interpreter.current_node == "main_menu"


def test_max_turns_goes_to_agent(hotline: Flow) -> None:
    c = call(hotline)
    for _ in range(30):
        if c.finished:
            break
        c.press("2")  # billing info
        c.say("no")  # no billing agent
        c.say("yes")  # something else: back to the menu
    assert c.transfer is not None and c.transfer.queue == "support"
    assert c.interpreter.context()["turns"] == 25


def test_classifier_override_and_exact_examples() -> None:
    class Nothing:
        def classify(self, text: str) -> IntentMatch:
            return IntentMatch(None, 0.1)

    flow = load_flow(ROOT / "flows" / "hotline.yaml", classifier_factory=None)
    interp = CallInterpreter(flow, {"caller": "1"}, classifier=Nothing())
    interp.start()
    out = interp.handle(events.Transcript("Order status!", 0.9))  # exactly an example: no model needed
    assert any(isinstance(a, Say) and a.text.startswith("Sure.") for a in out)
    interp2 = CallInterpreter(flow, {}, classifier=Nothing())
    interp2.start()
    out = interp2.handle(events.Transcript("where might my parcel be", 0.9))
    assert isinstance(out[0], Say) and out[0].text == "Sorry, I didn't catch that."


def test_ranked_runner_up_that_the_question_expects_is_taken(hotline: Flow) -> None:
    class Ranked:
        def classify(self, text: str) -> IntentMatch:
            return IntentMatch("unrelated", 0.7, (("unrelated", 0.7), ("billing", 0.6)))

    interp = CallInterpreter(hotline, {}, classifier=Ranked())
    interp.start()
    out = interp.handle(events.Transcript("something about my invoice maybe", 0.9))
    assert isinstance(out[0], Say) and out[0].text.startswith("Invoices are emailed")
    assert interp.context()["intent"] == "billing" and interp.context()["confidence"] == 0.6


def test_korean_flow_uses_grammar_and_keys() -> None:
    flow = load_flow(ROOT / "flows" / "korean.yaml", classifier_factory=KeywordClassifier.build)
    c = ScriptedCall(flow)
    listen = c.listening
    assert listen is not None and listen.grammar is not None and "상담원" in listen.grammar
    c.say("상담원")
    assert c.transfer is not None and c.transfer.queue == "support_ko"
    c2 = ScriptedCall(flow)
    c2.press("1")
    assert c2.said()[-2].startswith("주문 내역과 배송 상태는")
    c2.say("아니요")
    assert c2.said()[-1] == "감사합니다. 안녕히 계세요." and c2.hangup is not None


# ---- every node type, on a small flow ------------------------------------------------------------

NODES = """
version: 1
name: nodes
start: init
queues: [support]
variables: {base: "http://svc"}
global: {on_error: oops, fallback_queue: support}
nodes:
  init:
    set: {tries: 0, total: "{{ tries + 1 }}", who: "caller {{ caller }}"}
    next: check
  check:
    branch:
      - {if: "total > 1", goto: never}
      - {if: "caller.startswith('+44')", goto: uk}
    otherwise: ask_name
  never:
    hangup: "never"
  uk:
    say: "Hello from the UK."
    next: ask_name
  ask_name:
    ask: {prompt: "Say your name.", slot: text, save_as: name, input: speech}
    next: post
  post:
    http:
      method: POST
      url: "{{ base }}/names"
      headers: {X-Call: "{{ call_id }}"}
      json: {name: "{{ name }}", total: "{{ total }}", tags: ["a", "{{ who }}"]}
      save_as: saved
    next: voicemail
    on_failure: oops
  voicemail:
    record: {prompt: "Leave a message after the beep.", max_seconds: 20, save_as: message}
    next: sub
  sub:
    subflow: sub/rate.yaml
    next: jump
  jump:
    goto: done
  done:
    transfer:
      uri: "sip:desk@pbx.example.com"
      context: {summary: "{{ name }} rated {{ score }}", recording: "{{ message.path }}"}
  oops:
    hangup: {say: "Sorry, we hit a problem: goodbye.", reason: error_path}
"""

RATE = """
version: 1
name: rate
start: rate
variables: {score: 0}
nodes:
  rate:
    ask: {prompt: "Rate 1 to 5.", slot: number, min: 1, max: 5, save_as: score}
    next: back
  back:
    return: true
"""


@pytest.fixture()
def nodes_flow(tmp_path: Path) -> Flow:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rate.yaml").write_text(textwrap.dedent(RATE))
    (tmp_path / "nodes.yaml").write_text(textwrap.dedent(NODES))
    return load_flow(tmp_path / "nodes.yaml", classifier_factory=None)


def test_every_node_type_runs(nodes_flow: Flow) -> None:
    interp = CallInterpreter(nodes_flow, {"caller": "+441632960000", "call_id": "c-1"})
    out = interp.start()
    assert out[0] == Say(text="Hello from the UK.", barge_in=True)
    assert out[1] == Say(text="Say your name.", barge_in=True)
    assert isinstance(out[2], Listen) and out[2].speech and not out[2].dtmf
    [request] = interp.handle(events.Transcript("Ada Lovelace", 0.8))
    assert request == HttpRequest(method="POST", url="http://svc/names", headers={"X-Call": "c-1"},
                                  json={"name": "Ada Lovelace", "total": 1, "tags": ["a", "caller +441632960000"]})
    out = interp.handle(events.HttpResult(ok=True, status=201, data={"id": 7}))
    assert out == [Say(text="Leave a message after the beep.", barge_in=False), Record(max_seconds=20.0)]
    out = interp.handle(events.RecordingFinished(path="/tmp/m.wav", duration=3.5))
    assert out[0] == Say(text="Rate 1 to 5.", barge_in=True)
    assert isinstance(out[1], Listen) and out[1].dtmf_max_digits == 1
    [transfer] = interp.handle(events.DtmfDigit("4"))
    assert isinstance(transfer, Transfer) and transfer.uri == "sip:desk@pbx.example.com" and transfer.queue is None
    assert transfer.context["summary"] == "Ada Lovelace rated 4" and transfer.context["recording"] == "/tmp/m.wav"
    ctx = interp.context()
    assert ctx["path"] == ["init", "check", "uk", "ask_name", "post", "voicemail", "sub", "rate/rate", "rate/back",
                           "jump", "done"]
    assert ctx["variables"]["saved"] == {"id": 7} and ctx["variables"]["message"]["duration"] == 3.5  # type: ignore[index]
    assert interp.finished and interp.outcome == "transfer"


def test_http_failure_without_path_uses_on_error_node(nodes_flow: Flow) -> None:
    interp = CallInterpreter(nodes_flow, {"caller": "+1555"})
    interp.start()
    interp.handle(events.Transcript("Bob", 0.9))
    out = interp.handle(events.HttpResult(ok=False, status=500, error="boom"))
    assert out == [Say(text="Sorry, we hit a problem: goodbye.", barge_in=False), Hangup("error_path")]


def test_goto_loop_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(textwrap.dedent("""
        version: 1
        name: loop
        start: a
        queues: [help]
        variables: {done: false}
        nodes:                      # a loop with a way out that is never taken: only the run finds it
          a:
            branch: [{if: "done", goto: c}]
            otherwise: b
          b: {goto: a}
          c: {hangup: true}
    """))
    interp = CallInterpreter(load_flow(path, classifier_factory=None), {})
    out = interp.start()
    assert isinstance(out[0], Say) and "something went wrong" in out[0].text
    assert isinstance(out[1], Transfer) and out[1].queue == "help"
    assert "loop" in str(out[1].context["fallback_reason"])


def test_error_without_fallback_queue_hangs_up(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(textwrap.dedent("""
        version: 1
        name: e
        start: a
        variables: {n: 0}
        nodes:
          a: {say: "{{ n.missing.deeper }}", next: b}
          b: {hangup: true}
    """))
    interp = CallInterpreter(load_flow(path, classifier_factory=None), {})
    out = interp.start()
    assert out[-1] == Hangup("error") and interp.outcome == "error"
    assert interp.handle(events.NoInput()) == []


def test_demo_flow_with_the_real_intent_classifier() -> None:
    pytest.importorskip("ivr.nlu.intents", reason="the intent classifier is not installed")
    flow = load_flow(ROOT / "flows" / "hotline.yaml")  # the project's classifier, built from the examples
    c = ScriptedCall(flow, http=found)
    c.say("I want to find out where my package is")
    assert c.said()[-1].startswith("Sure. Please say or key in your order number")
    c2 = ScriptedCall(flow)
    c2.say("I need to speak with a representative please")
    assert c2.transfer is not None and c2.transfer.queue == "support"


# ------------------------------------------------------------------------------ recognizer confidence

UNSURE = """
version: 1
name: unsure
language: en-US
start: menu
speech: {engine: whisper, model: base, min_confidence: 0.4}
intents:
  agent: {examples: [talk to a person, operator]}
  billing: {examples: [billing, a question about my bill]}
nodes:
  menu:
    ask:
      prompt: "Billing or agent?"
    on: {billing: number, agent: bye}
  number:
    ask:
      prompt: "Your account number?"
      slot: digits
      save_as: account
      confirm: {prompt: "I heard {{ account | digits }}. Right?", when: unsure, sure_above: 0.8}
    next: bye
  bye:
    hangup: {say: "Goodbye."}
"""


@pytest.fixture()
def unsure_flow(tmp_path: Path) -> Flow:
    (tmp_path / "unsure.yaml").write_text(textwrap.dedent(UNSURE))
    return load_flow(tmp_path / "unsure.yaml", classifier_factory=KeywordClassifier.build)


def heard(text: str, *probabilities: float) -> events.Transcript:
    words = tuple(events.Word(w, p) for w, p in zip(text.split(), probabilities, strict=True))
    return events.Transcript(text, sum(probabilities) / len(probabilities), words)


def test_an_unsure_transcript_is_a_no_match_not_a_guess(unsure_flow: Flow) -> None:
    c = call(unsure_flow)
    c.send(heard("billing", 0.2))  # the recognizer barely heard it: ask again
    assert c.said()[-2:] == ["Sorry, I didn't understand that.", "Billing or agent?"]
    assert c.interpreter.current_node == "menu"
    c.send(heard("billing", 0.9))
    assert c.interpreter.current_node == "number"


def test_a_recognizer_loop_is_no_intent(unsure_flow: Flow) -> None:
    c = call(unsure_flow)
    c.say("please please please please please", confidence=0.95)  # noise, not a caller asking for a person
    assert c.interpreter.current_node == "menu" and c.said()[-2] == "Sorry, I didn't understand that."


def test_confirm_when_unsure_reads_back_only_doubtful_speech(unsure_flow: Flow) -> None:
    sure = call(unsure_flow)
    sure.say("billing")
    sure.send(heard("4 5 6 7", 0.97, 0.95, 0.99, 0.9))
    assert sure.said()[-1] == "Goodbye."  # every word heard clearly: no read-back
    doubtful = call(unsure_flow)
    doubtful.say("billing")
    doubtful.send(heard("4 5 6 7", 0.97, 0.55, 0.99, 0.9))
    assert doubtful.said()[-1] == "I heard 4 5 6 7. Right?"
    keyed = call(unsure_flow)
    keyed.say("billing")
    keyed.press("4567#")
    assert keyed.said()[-1] == "Goodbye."  # keys are not misheard


def test_speech_settings_are_read_and_checked(unsure_flow: Flow, tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.runtime import FlowRuntime

    assert FlowRuntime(unsure_flow).speech() == ("whisper", "base")
    assert FlowRuntime(unsure_flow).speech_key() == "whisper:base"
    assert FlowRuntime(unsure_flow).model_for("vosk") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(UNSURE).replace("engine: whisper", "engine: whispr")
                   .replace("when: unsure", "when: sometimes"))
    with pytest.raises(FlowError) as info:
        load_flow(bad, classifier_factory=None)
    text = str(info.value)
    assert "unknown speech engine 'whispr' (did you mean 'whisper'?)" in text
    assert "'when' is 'always'" in text and f"{bad}:" in text
