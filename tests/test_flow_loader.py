"""Loading and checking flows: every node type compiles; every kind of mistake is reported with its
exact file:line:col, all of them at once."""

from __future__ import annotations

import textwrap
import wave
from pathlib import Path

import pytest

from ivr.errors import FlowError
from ivr.flow.loader import check_flow, load_flow, load_intents
from ivr.flow.schema import (
    AskNode,
    BranchNode,
    GotoNode,
    HangupNode,
    HttpNode,
    RecordNode,
    ReturnNode,
    SayNode,
    SetNode,
    SubflowNode,
    TransferNode,
)
from ivr.flow.testing import KeywordClassifier

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "flows" / "broken"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def silent_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 800)


KITCHEN_SINK = """
    version: 1
    name: sink
    language: en-GB
    start: hello
    queues: [support]
    variables: {base: "http://svc"}
    global: {agent_intent: agent, agent_dtmf: "0", agent_target: human, on_error: oops, max_turns: 9}
    intents:
      agent: {examples: ["agent", "a person"]}
      sales: {examples: ["buy something", "sales"]}
    nodes:
      hello:
        say: {text: "Hi {{ caller }}", audio: sounds/hi.wav, barge_in: false}
        next: init
      init:
        set: {tries: 0, label: "caller {{ caller }}", total: "{{ tries + 1 }}"}
        next: menu
      menu:
        ask:
          prompt: "Sales or agent?"
          dtmf: {"1": sales}
          grammar: examples
          timeout: 4
          end_silence: 0.6
          max_speech: 10
          barge_in: false
          no_input: {retries: 1, prompts: ["Hello?", "Still there?"], goto: human}
          no_match: 3
        on: {sales: account, agent: human}
      account:
        ask:
          prompt: "Account number?"
          slot: digits
          save_as: acct
          min_digits: 3
          max_digits: 6
          terminator: "*"
          confirm: {prompt: "I heard {{ acct | digits }}, right?", retries: 1, no_prompt: "Again then."}
        next: lookup
      lookup:
        http:
          method: post
          url: "{{ base }}/accounts"
          headers: {X-Caller: "{{ caller }}"}
          json: {account: "{{ acct }}", tries: "{{ tries }}"}
          timeout: 2
          retries: 2
          filler: "One moment."
          filler_after: 0.5
          save_as: account_info
        next: check
        on_failure: oops
      check:
        branch:
          - {if: "account_info.vip", goto: survey}
        otherwise: voicemail
      voicemail:
        record: {prompt: "Leave a message.", max_seconds: 30, end_silence: 2, terminator: "#", beep: true,
                 save_as: message}
        next: survey
      survey:
        subflow: sub/survey.yaml
        next: jump
      jump:
        goto: bye
      bye:
        hangup: {say: "Bye {{ survey_score }}.", reason: done}
      human:
        transfer: {queue: support, say: "Transferring.", context: {why: "{{ last_intent }}"}}
      oops:
        transfer: {uri: "sip:help@pbx.example.com"}
"""

SURVEY = """
    version: 1
    name: survey
    start: rate
    variables: {survey_score: 0}
    nodes:
      rate:
        ask: {prompt: "Rate us 1 to 5.", slot: number, min: 1, max: 5, save_as: survey_score}
        next: done
      done:
        return: true
"""


def test_every_node_type_compiles(tmp_path: Path) -> None:
    silent_wav(tmp_path / "sounds" / "hi.wav")
    write(tmp_path / "sub" / "survey.yaml", SURVEY)
    flow = load_flow(write(tmp_path / "sink.yaml", KITCHEN_SINK), classifier_factory=KeywordClassifier.build)
    kinds = {name: type(node) for name, node in flow.nodes.items()}
    assert kinds == {"hello": SayNode, "init": SetNode, "menu": AskNode, "account": AskNode, "lookup": HttpNode,
                     "check": BranchNode, "voicemail": RecordNode, "survey": SubflowNode, "jump": GotoNode,
                     "bye": HangupNode, "human": TransferNode, "oops": TransferNode}
    hello = flow.nodes["hello"]
    assert isinstance(hello, SayNode) and hello.audio == str(tmp_path / "sounds" / "hi.wav") and not hello.barge_in
    menu = flow.nodes["menu"]
    assert isinstance(menu, AskNode)
    assert menu.grammar == ("a person", "agent", "buy something", "sales")  # 'examples' of its intents
    assert menu.no_input.retries == 1 and [p.source for p in menu.no_input.prompts] == ["Hello?", "Still there?"]
    assert menu.no_match.retries == 3 and menu.timeout == 4.0 and menu.dtmf == {"1": "sales"}
    account = flow.nodes["account"]
    assert isinstance(account, AskNode) and account.slot == "digits" and account.max_digits == 6
    assert account.confirm is not None and account.confirm.retries == 1
    lookup = flow.nodes["lookup"]
    assert isinstance(lookup, HttpNode) and lookup.method == "POST" and lookup.on_failure == "oops"
    survey = flow.nodes["survey"]
    assert isinstance(survey, SubflowNode) and survey.flow is not None
    assert isinstance(survey.flow.nodes["done"], ReturnNode)
    assert flow.language == "en-GB" and flow.globals.max_turns == 9 and flow.classifier is not None
    assert survey.flow.classifier is None  # no intents of its own
    assert tmp_path / "sub" / "survey.yaml" in flow.sources


BROKEN_CASES = {
    "syntax_error.yaml": [(8, 5, "YAML syntax error: expected ',' or ']'")],
    "duplicate_key.yaml": [(9, 3, 'YAML syntax error: found duplicate key "hello"')],
    "unknown_key.yaml": [(6, 3, "say node 'hello' needs 'next'"),
                         (8, 5, "unknown key 'nxet' in say node 'hello' (did you mean 'next'?)"),
                         (11, 7, "unknown key 'promt' in ask node 'menu' (did you mean 'prompt'?)")],
    "wrong_type.yaml": [(10, 16, "'timeout' must be a number, got the string 'five seconds'"),
                        (11, 17, "'barge_in' must be true or false, got the string 'maybe'"),
                        (12, 27, "'retries' must be at least 0, got -1")],
    "missing_target.yaml": [(8, 11, "node 'main_menu' does not exist (next of 'greeting') "
                                    "(did you mean 'main_manu'?)")],
    "unreachable.yaml": [(9, 3, "node 'forgotten' is unreachable")],
    "undefined_intent.yaml": [(14, 7, "undefined intent 'biling_question'")],
    "undefined_variable.yaml": [(13, 10, "undefined variable 'acount' (did you mean 'account'?)")],
    "unknown_queue.yaml": [(9, 14, "unknown queue 'suport' (did you mean 'support'?)")],
    "missing_audio.yaml": [(8, 14, "audio file 'sounds/welcome.wav' not found")],
    "bad_template.yaml": [(9, 10, "bad template in 'say': unexpected '}'"),
                          (13, 13, "bad condition: unexpected 'end of print statement'")],
    "silent_ask.yaml": [(7, 10, "ask node 'order' has no 'prompt': the caller would wait in silence")],
    "endless_loop.yaml": [(11, 3, "node 'promo' starts a loop that never waits for the caller "
                                  "(promo → count → again → promo)")],
    "subflow_never_returns.yaml": [(6, 3, "sub-flow 'parts/survey_goodbye.yaml' never returns: no 'return' node "
                                          "is reachable from its start 'rate', so 'next: to_agent' of 'survey' "
                                          "can never run")],
    "many_errors.yaml": [(2, 10, "unsupported flow version 2"),
                         (11, 10, "undefined variable 'callr' (did you mean 'caller'?)"),
                         (16, 19, "undefined intent 'agnet' (did you mean 'agent'?)"),
                         (18, 14, "node 'to_agnt' does not exist (agent of 'menu') (did you mean 'to_agent'?)"),
                         (20, 23, "unknown queue 'sales'")],
}


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_broken_flow_reports_exact_positions(name: str) -> None:
    shown = f"flows/broken/{name}"
    diagnostics = check_flow(BROKEN / name)
    lines = [f"{shown}:{d.line}:{d.column}: {d.message}" for d in diagnostics]
    expected = [f"{shown}:{line}:{col}: {message}" for line, col, message in BROKEN_CASES[name]]
    assert len(lines) == len(expected), "\n".join(lines)
    for got, want in zip(lines, expected, strict=True):
        assert got.startswith(want), f"{got!r} does not start with {want!r}"


def test_every_broken_example_is_covered() -> None:
    assert {p.name for p in BROKEN.glob("*.yaml")} == set(BROKEN_CASES)


def test_load_flow_raises_with_every_problem_in_order() -> None:
    with pytest.raises(FlowError) as info:
        load_flow(BROKEN / "many_errors.yaml", classifier_factory=None)
    text = str(info.value)
    assert text.count("\n") == 4
    assert text.index(":2:10:") < text.index(":11:10:") < text.index(":20:23:")


def test_known_queues_from_the_server_count(tmp_path: Path) -> None:
    path = write(tmp_path / "q.yaml", """
        version: 1
        name: q
        start: t
        nodes:
          t: {transfer: sales}
    """)
    assert check_flow(path) == []  # no queue list anywhere: nothing to check against
    assert check_flow(path, ["sales", "support"]) == []
    [problem] = check_flow(path, ["support"])
    assert (problem.line, problem.column) == (5, 17) and "unknown queue 'sales'" in problem.message


def test_type_and_structure_mistakes(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """
        version: 1
        name: bad
        start: a
        nodes:
          a:
            say: "Hi"
            ask: {prompt: "x", slot: digits}
            next: b
          b:
            ask: {prompt: "Pick", slot: digitz}
            next: c
          c:
            sya: "typo"
          d: "just text"
    """)
    messages = [(d.line, d.column, d.message) for d in check_flow(path)]
    assert (7, 5, "node 'a' has both 'say' and 'ask'; a node has exactly one type (split it into two nodes "
                  "joined by 'next')") in messages
    assert any(m[:2] == (10, 33) and "unknown slot type 'digitz' (did you mean 'digits'?)" in m[2] for m in messages)
    assert any(m[:2] == (12, 3) and "node 'c' has no type" in m[2] and "did you mean 'say'" in m[2]
               for m in messages)
    assert any(m[:2] == (14, 6) and "node 'd' must be a mapping" in m[2] for m in messages)
    assert len(messages) == 4, messages  # nothing echoed about links to the broken nodes


def test_ask_needs_targets_and_slot_rules(tmp_path: Path) -> None:
    path = write(tmp_path / "ask.yaml", """
        version: 1
        name: ask
        start: a
        intents: {yes_please: {examples: ["yes please"]}}
        nodes:
          a:
            ask: {prompt: "Say something", confirm: "Really?"}
          b:
            ask: {prompt: "Yes or no?", slot: yes_no}
            on: {"yes": a, "maybe": a}
    """)
    messages = [f"{d.line}:{d.column}: {d.message}" for d in check_flow(path)]
    assert any(m.startswith("6:3: ask node 'a' needs 'on'") for m in messages), messages
    assert any(m.startswith("7:45: 'confirm' reads back a collected") for m in messages), messages
    assert any(m.startswith("10:20: a yes_no question branches with") for m in messages), messages


def test_subflow_cycle_and_subflow_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", """
        version: 1
        name: a
        start: s
        nodes:
          s: {subflow: b.yaml, next: e}
          e: {hangup: true}
    """)
    write(tmp_path / "b.yaml", """
        version: 1
        name: b
        start: s
        nodes:
          s: {subflow: a.yaml, next: r}
          r: {return: true}
    """)
    messages = [str(d) for d in check_flow(tmp_path / "a.yaml")]
    assert any("sub-flow cycle: a.yaml → b.yaml → a.yaml" in m for m in messages), messages
    assert any(m.startswith(f"{tmp_path}/a.yaml:5:16: sub-flow 'b.yaml' is invalid") for m in messages), messages


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    [missing] = check_flow(tmp_path / "nope.yaml")
    assert "file not found" in missing.message
    [empty] = check_flow(write(tmp_path / "empty.yaml", "\n"))
    assert "the file is empty" in empty.message


def test_audio_relative_to_the_flow_file(tmp_path: Path) -> None:
    silent_wav(tmp_path / "flows" / "prompts" / "hello.wav")
    path = write(tmp_path / "flows" / "f.yaml", """
        version: 1
        name: f
        start: a
        nodes:
          a: {say: {audio: prompts/hello.wav}, next: b}
          b: {hangup: true}
    """)
    assert check_flow(path) == []


def test_intents_only_file_for_evaluation(tmp_path: Path) -> None:
    path = write(tmp_path / "intents.yaml", """
        version: 1
        name: banking
        language: en-US
        intent_threshold: 0.4
        intents:
          card_lost: {examples: ["I lost my card", "my card is missing"]}
          balance: {examples: ["what is my balance"]}
    """)
    spec = load_intents(path)
    assert spec.name == "banking" and spec.threshold == 0.4
    assert spec.examples == {"card_lost": ["I lost my card", "my card is missing"], "balance": ["what is my balance"]}
    assert load_intents(ROOT / "flows" / "hotline.yaml").examples["agent"][0] == "agent"
    bad = write(tmp_path / "bad_intents.yaml", """
        version: 1
        name: x
        intents:
          lost: ["I lost my card"]
    """)
    with pytest.raises(FlowError, match=r"bad_intents.yaml:4:9: intent 'lost' must be written as"):
        load_intents(bad)


def test_demo_flows_are_valid() -> None:
    for name in ("hotline.yaml", "korean.yaml"):
        assert check_flow(ROOT / "flows" / name) == []


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("version: 1\nname: bomb\nstart: bye\nvariables:\n" + "".join(f"  {line}\n" for line in lines)
            + "nodes:\n  bye: {hangup: true}\n")


def test_an_alias_bomb_is_refused_quickly_at_the_anchor(tmp_path: Path) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(6))  # 9^6 strings: 17 s and 716 MB per parse before the limit
    started = time.perf_counter()
    [problem] = check_flow(path)
    assert time.perf_counter() - started < 3
    assert str(problem).startswith(f"{path}:8:7: too much YAML: aliases repeating the value anchored here")
    small = tmp_path / "small.yaml"
    small.write_text(_alias_bomb(3))  # 729 values: aliases are fine in moderation
    assert check_flow(small) == []


def test_a_flow_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("version: 1\nname: huge\nstart: bye\nnodes:\n  bye: {hangup: true}\n" + "#" * 1_100_000 + "\n")
    [problem] = check_flow(path)
    assert str(problem) == f"{path}:1:1: the file is 1.1 MB; flow files may be at most 1 MB (move parts into sub-flows)"


def test_loops_with_a_way_out_and_questions_are_not_endless(tmp_path: Path) -> None:
    path = write(tmp_path / "retry.yaml", """
        version: 1
        name: retry
        start: menu
        variables: {tries: 0}
        nodes:
          menu:
            ask: {prompt: "Your PIN?", slot: digits}
            next: count
          count:
            set: {tries: "{{ tries + 1 }}"}
            next: check
          check:
            branch: [{if: "tries > 3", goto: bye}]
            otherwise: spin
          spin: {goto: count}
          bye: {hangup: true}
    """)
    assert check_flow(path) == []  # a counting loop that can leave is fine


def test_a_subflow_that_returns_needs_next(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write(tmp_path / "parts" / "sub.yaml", """
        version: 1
        name: sub
        start: r
        nodes:
          r: {return: true}
    """)
    path = write(tmp_path / "main.yaml", """
        version: 1
        name: main
        start: s
        nodes:
          s: {subflow: parts/sub.yaml}
    """)
    [problem] = check_flow(path)
    assert (problem.line, problem.column) == (5, 3)
    assert problem.message == "subflow node 's' needs 'next': the node to go to when 'parts/sub.yaml' returns"


def test_system_prompts_come_from_the_flow_language_and_its_prompts(tmp_path: Path) -> None:
    base = """
        version: 1
        name: p
        language: {language}
        start: bye
        {prompts}
        nodes:
          bye: {{hangup: true}}
    """
    korean = load_flow(write(tmp_path / "ko.yaml", base.format(language="ko-KR", prompts="")))
    assert korean.prompt("voicemail").startswith("삐 소리가") and korean.prompt("error").startswith("죄송합니다")
    chinese = load_flow(write(tmp_path / "zh.yaml", base.format(language="zh-CN", prompts="")))
    assert chinese.prompt("no_match") == "抱歉，我没有听懂。"
    own = load_flow(write(tmp_path / "own.yaml", base.format(
        language="ko-KR", prompts='prompts: {no_agents: "지금은 상담이 어렵습니다.", wait_minutes: "{minutes}분쯤"}')))
    assert own.prompt("no_agents") == "지금은 상담이 어렵습니다." and own.prompt("wait_minutes") == "{minutes}분쯤"
    assert own.prompt("no_input") == korean.prompt("no_input")


def test_prompt_mistakes_are_reported_with_positions(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """
        version: 1
        name: bad
        start: bye
        prompts:
          voicemial: "Leave a message."
          queue_announcement: "You are {postion} in line."
        nodes:
          bye: {hangup: true}
    """)
    messages = [str(d) for d in check_flow(path)]
    assert any(":5:3: unknown key 'voicemial' in 'prompts' (did you mean 'voicemail'?)" in m for m in messages)
    assert any(":6:23: unknown placeholder {postion} in prompt 'queue_announcement'" in m for m in messages)
