"""``ivr intents eval|fewshot`` on small files, and a real 10-shot Banking77 run on a subset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.bench.intents import BANKING77, run_intents_bench
from ivr.cli.intents import intents

FLOW = """\
version: 1
name: support
language: en-US
intent_threshold: 0.4
intents:
  order_status:
    examples: ["where is my order", "track my package", "order status", "has my parcel shipped"]
  agent:
    examples: ["talk to a person", "representative", "operator", "can i speak to a human"]
nodes: {}
"""

DATA = """\
text,intent
where's my order,order_status
wear is my package,order_status
i want to talk to a human being,agent
operator please,agent
what is the weather on mars,
"""


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    flow = tmp_path / "support.yaml"
    flow.write_text(FLOW)
    data = tmp_path / "turns.csv"
    data.write_text(DATA)
    return flow, data


def test_eval_prints_accuracy_and_per_intent_scores(files: tuple[Path, Path]) -> None:
    flow, data = files
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("accuracy 1.0000 on n=5")
    assert "order_status" in result.output and "(no match)" in result.output


def test_eval_json_report(files: tuple[Path, Path]) -> None:
    flow, data = files
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] == 1.0 and report["n"] == 5
    assert report["per_intent"]["agent"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}


def test_eval_reports_confusions(files: tuple[Path, Path], tmp_path: Path) -> None:
    flow, _ = files
    data = tmp_path / "mislabelled.csv"
    data.write_text("text,intent\nwhere is my order,agent\noperator,agent\n")
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data), "--json"])
    report = json.loads(result.output)
    assert report["accuracy"] == 0.5
    assert report["confusions"] == [{"expected": "agent", "predicted": "order_status", "count": 1}]


def test_banking77_header_is_accepted(files: tuple[Path, Path], tmp_path: Path) -> None:
    flow, _ = files
    data = tmp_path / "banking.csv"
    data.write_text("text,category\nwhere is my parcel,order_status\n")
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("words,label\nhi,agent\n", ":1:1: header is 'words,label'; expected columns 'text' and 'intent'"),
        ("text,intent\nhi,agent,extra\n", ":2:1: 3 fields, expected 2"),
        ("text,intent\noperator,agent\nhello,refunds\n", ":3:1: intent 'refunds' is not in the flow"),
        ("text,intent\n", ":2:1: no rows to evaluate"),
    ],
)
def test_bad_csv_is_reported_with_its_line(
    files: tuple[Path, Path], tmp_path: Path, csv_text: str, message: str
) -> None:
    flow, _ = files
    data = tmp_path / "bad.csv"
    data.write_text(csv_text)
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data)])
    assert result.exit_code != 0
    assert f"{data}{message}" in str(result.exception)


def test_bad_flow_lists_every_problem_with_its_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = files
    flow = tmp_path / "bad.yaml"
    flow.write_text("version: 1\nintents:\n  agent:\n    examples: []\n  billing: {examples: [bill, 3]}\n"
                    "intent_threshold: 2\n")
    result = CliRunner().invoke(intents, ["eval", "--flow", str(flow), "--data", str(data)])
    lines = str(result.exception).splitlines()
    assert lines == [
        f"{flow}:3:3: intent 'agent' needs a non-empty 'examples:' list",
        f"{flow}:5:30: intent 'billing': examples must be non-empty text",
        f"{flow}:6:1: intent_threshold must be a number from 0 to 1 (e.g. 0.5)",
    ]


def test_fewshot_writes_a_flow_that_eval_reads(tmp_path: Path) -> None:
    data = tmp_path / "all.csv"
    rows = [f"where is my order number {i},order_status" for i in range(6)]
    rows += [f"put me through to an operator {i},agent" for i in range(6)]
    data.write_text("text,intent\n" + "\n".join(rows) + "\n")
    flow, rest = tmp_path / "flow.yaml", tmp_path / "rest.csv"
    runner = CliRunner()
    made = runner.invoke(intents, ["fewshot", "--data", str(data), "-k", "2", "--seed", "1", "-o", str(flow),
                                   "--rest", str(rest)])
    assert made.exit_code == 0, made.output
    assert "2 intents x 2 examples; 8 held-out rows" in made.output
    result = runner.invoke(intents, ["eval", "--flow", str(flow), "--data", str(rest), "--json"])
    assert json.loads(result.output)["accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.skipif(not BANKING77.is_file(), reason="shared/datasets/banking77 is not beside the repo")
def test_ten_shot_banking77_subset_is_accurate() -> None:
    # 20 intents, 10 examples each, 400 other utterances of those intents: measured 0.95 (seed 0).
    result = run_intents_bench(seeds=1, intents=20, test_per_seed=400)
    assert result["model"].startswith("all-MiniLM-L6-v2")
    assert result["accuracy_mean"] >= 0.90, result
    assert result["ms_per_utterance_median"] < 100, result
