"""Hot reload and routing: edits take effect, invalid edits keep the last good flow, calls keep theirs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ivr.errors import FlowError
from ivr.flow.interpreter import CallInterpreter
from ivr.flow.registry import FlowRegistry, user_part
from ivr.flow.testing import KeywordClassifier, ScriptedCall

FLOW = """
version: 1
name: {name}
numbers: [{numbers}]
start: hello
nodes:
  hello:
    say: "{greeting}"
    next: bye
  bye:
    hangup: true
"""


def write(path: Path, name: str, greeting: str, numbers: str = "") -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(FLOW.format(name=name, greeting=greeting, numbers=numbers)))
    if path.stat().st_mtime_ns == before:  # same clock tick: make the change visible like a later save
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def first_prompt(registry: FlowRegistry, name: str) -> str:
    return ScriptedCall(registry.get(name)).said()[0]


@pytest.fixture()
def flows_dir(tmp_path: Path) -> Path:
    write(tmp_path / "hotline.yaml", "hotline", "Hello one.", '"1000", hotline')
    write(tmp_path / "sales.yaml", "sales", "Sales here.", '"2000"')
    return tmp_path


def registry(path: Path, **kwargs: object) -> FlowRegistry:
    return FlowRegistry(path, classifier_factory=KeywordClassifier.build, **kwargs)  # type: ignore[arg-type]


def test_loads_every_flow_and_routes_numbers(flows_dir: Path) -> None:
    reg = registry(flows_dir)
    assert reg.names() == ["hotline", "sales"]
    assert reg.route("2000").name == "sales"
    assert reg.route("sip:2000@pbx.example.com").name == "sales"
    assert reg.route("<sips:hotline@10.0.0.1;transport=tls>").name == "hotline"
    assert reg.route("sales").name == "sales"  # a flow's own name works as a number
    assert reg.route("9999").name == "hotline"  # unclaimed: the default flow
    assert registry(flows_dir, default_flow="sales").route("9999").name == "sales"
    with pytest.raises(FlowError, match="no flow named 'nope'"):
        reg.get("nope")


def test_edit_reloads_and_calls_in_progress_keep_their_version(flows_dir: Path) -> None:
    reg = registry(flows_dir)
    old = reg.get("hotline")
    in_progress = CallInterpreter(old, {})
    in_progress.start()
    assert reg.refresh() == []  # nothing changed
    write(flows_dir / "hotline.yaml", "hotline", "Hello two.", '"1000"')
    assert reg.refresh() == ["hotline"]
    assert first_prompt(reg, "hotline") == "Hello two."
    assert reg.get("hotline") is not old and in_progress.flow is old
    assert ScriptedCall(old).said()[0] == "Hello one."


def test_invalid_edit_keeps_last_good_version(flows_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = registry(flows_dir)
    (flows_dir / "hotline.yaml").write_text("version: 1\nname: hotline\nstart: hello\nnodes:\n  hello: {say: [}\n")
    assert reg.refresh() == []
    assert first_prompt(reg, "hotline") == "Hello one."
    [problem] = reg.errors[str(flows_dir / "hotline.yaml")]
    assert problem.line == 5 and "YAML syntax error" in problem.message
    assert "keeping the last good version of 'hotline'" in caplog.text
    assert reg.refresh() == []  # not retried until the file changes again
    write(flows_dir / "hotline.yaml", "hotline", "Hello three.")
    assert reg.refresh() == ["hotline"] and reg.errors == {}
    assert first_prompt(reg, "hotline") == "Hello three."


def test_new_and_removed_files(flows_dir: Path) -> None:
    reg = registry(flows_dir)
    write(flows_dir / "extra.yaml", "extra", "Extra.")
    assert reg.refresh() == ["extra"]
    (flows_dir / "sales.yaml").unlink()
    reg.refresh()
    assert reg.names() == ["extra", "hotline"]


def test_subflow_edit_reloads_the_parent(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "part.yaml", "part", "Part one.")
    (tmp_path / "main.yaml").write_text(textwrap.dedent("""
        version: 1
        name: main
        start: s
        nodes:
          s: {subflow: sub/part.yaml}   # part hangs up: it never returns, so no 'next'
    """))
    reg = registry(tmp_path)
    assert reg.names() == ["main"]  # sub-directories hold sub-flows, not flows of their own
    write(tmp_path / "sub" / "part.yaml", "part", "Part two.")
    assert reg.refresh() == ["main"]
    assert first_prompt(reg, "main") == "Part two."


def test_server_start_refuses_invalid_flows(flows_dir: Path) -> None:
    (flows_dir / "broken.yaml").write_text("version: 1\nname: broken\nstart: nowhere\nnodes:\n  a: {hangup: true}\n")
    with pytest.raises(FlowError) as info:
        registry(flows_dir)
    assert f"{flows_dir / 'broken.yaml'}:3:8: node 'nowhere' does not exist" in str(info.value)
    lenient = registry(flows_dir, strict=False)
    assert lenient.names() == ["hotline", "sales"] and str(flows_dir / "broken.yaml") in lenient.errors


def test_duplicate_flow_names_are_refused(flows_dir: Path) -> None:
    write(flows_dir / "copy.yaml", "sales", "Copy.")
    with pytest.raises(FlowError, match="flow name 'sales' is already used"):
        registry(flows_dir)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="flow directory not found"):
        registry(tmp_path / "nope")


def test_user_part() -> None:
    assert user_part("sip:1000@host") == "1000"
    assert user_part("tel:+15551234") == "+15551234"
    assert user_part("hotline") == "hotline"


def test_a_broken_file_is_parsed_and_logged_once_per_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # The server runs with --flows flows (a relative path): stamps used to mix relative and absolute keys,
    # so a broken file was parsed (and logged) again every second.
    (tmp_path / "flows").mkdir()
    write(tmp_path / "flows" / "hotline.yaml", "hotline", "Hello one.")
    monkeypatch.chdir(tmp_path)
    results: list[str] = []
    reg = registry(Path("flows"), on_reload=results.append)
    (tmp_path / "flows" / "hotline.yaml").write_text("version: 1\nname: hotline\nstart: hello\nnodes: {hello: [}\n")
    with caplog.at_level("INFO", logger="ivr.flow.registry"):
        for _ in range(3):
            reg.refresh()
        assert len([r for r in caplog.records if "invalid flow" in r.getMessage()]) == 1
        write(tmp_path / "flows" / "hotline.yaml", "hotline", "Hello two.")
        assert reg.refresh() == ["hotline"] and reg.refresh() == []
    write(tmp_path / "flows" / "sales.yaml", "sales", "Sales here.")
    assert reg.refresh() == ["sales"]  # a file added while running counts too
    assert results == ["error", "ok", "ok"]
    [reloaded] = [r.getMessage() for r in caplog.records if "reloaded flow" in r.getMessage()]
    assert "'hotline' version " in reloaded and "(revision 2)" in reloaded
