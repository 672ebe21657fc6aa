"""``ivr flows validate`` and ``ivr flows graph`` as a flow designer uses them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.flows import flows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(ROOT)
    return CliRunner()


def test_validate_ok_flows(runner: CliRunner) -> None:
    result = runner.invoke(flows, ["validate", "flows/"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["ok flows/hotline.yaml", "ok flows/korean.yaml"]


def test_validate_broken_flows_lists_every_error_and_fails(runner: CliRunner) -> None:
    result = runner.invoke(flows, ["validate", "flows/hotline.yaml", "flows/broken"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "ok flows/hotline.yaml"
    assert "flows/broken/unknown_queue.yaml:9:14: unknown queue 'suport' (did you mean 'support'?); the queues " \
           "file has: billing, orders, spanish, support, support_ko" in lines
    assert any(line.startswith("flows/broken/syntax_error.yaml:8:5: YAML syntax error") for line in lines)
    files_with_errors = {line.split(":")[0] for line in lines[1:]}
    assert files_with_errors == {str(p.relative_to(ROOT)) for p in (ROOT / "flows" / "broken").glob("*.yaml")}
    assert "15 flow file(s) with errors" in result.stderr


def test_validate_with_server_queues(runner: CliRunner) -> None:
    result = runner.invoke(flows, ["validate", "--queues", "support,sales", "flows/hotline.yaml"])
    assert result.exit_code == 0, result.output  # hotline's own queues plus these


def test_validate_checks_transfers_against_the_queues_file(runner: CliRunner, tmp_path: Path) -> None:
    # The demo's billing transfer used to pass validation because the flow's own 'queues:' listed it.
    queues = tmp_path / "queues.yaml"
    text = (ROOT / "config" / "queues.yaml").read_text()
    queues.write_text(text.replace("  billing:", "  bililng:"))
    result = runner.invoke(flows, ["validate", "--queues", str(queues), "flows/hotline.yaml"])
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        "flows/hotline.yaml:11:19: unknown queue 'billing' (did you mean 'bililng'?); the queues file has: "
        "bililng, orders, spanish, support, support_ko",
        "flows/hotline.yaml:322:14: unknown queue 'billing' (did you mean 'bililng'?); the queues file has: "
        "bililng, orders, spanish, support, support_ko",
    ]


def test_shipped_queues_file_covers_every_demo_flow(runner: CliRunner) -> None:
    result = runner.invoke(flows, ["validate", "--queues", "config/queues.yaml", "flows/"])
    assert result.exit_code == 0, result.output


def test_validate_missing_path(runner: CliRunner) -> None:
    result = runner.invoke(flows, ["validate", "flows/nope.yaml"])
    assert result.exit_code != 0 and "no such file or directory" in str(result.exception or result.output)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is a documented system dependency")
def test_graph_svg_shows_nodes_prompts_and_labelled_edges(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "hotline.svg"
    result = runner.invoke(flows, ["graph", "flows/hotline.yaml", "-o", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("ASK: main_menu", "TRANSFER: to_agent", "HTTP: lookup_order", "BRANCH: order_found",
                 "order_status / 1", "billing / 2", "no_input ×3", "confirmed", "failure", "agent / 0 (anywhere)",
                 "How can I help you today?"):
        assert text in svg, text


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is a documented system dependency")
def test_graph_png_and_dot(runner: CliRunner, tmp_path: Path) -> None:
    png = tmp_path / "k.png"
    assert runner.invoke(flows, ["graph", "flows/korean.yaml", "-o", str(png)]).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = tmp_path / "k.dot"
    assert runner.invoke(flows, ["graph", "flows/korean.yaml", "-o", str(dot)]).exit_code == 0
    assert dot.read_text().startswith('digraph "korean"') and "상담원" in dot.read_text()


def test_graph_of_an_invalid_flow_prints_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(flows, ["graph", "flows/broken/unreachable.yaml", "-o", str(tmp_path / "x.svg")])
    assert result.exit_code != 0
    assert "flows/broken/unreachable.yaml:9:3: node 'forgotten' is unreachable" in str(result.exception)
    bad = runner.invoke(flows, ["graph", "flows/hotline.yaml", "-o", str(tmp_path / "x.gif")])
    assert bad.exit_code != 0 and "unknown diagram format" in str(bad.exception)
