"""Every YAML file a person writes (flows, queues, scenarios, intent flows, fixture lists) is read by one
loader: an alias bomb or an oversized file is refused with ``file:line:col``, quickly, whichever it is."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ivr.errors import ConfigError
from ivr.nlu.evaluation import read_flow_intents
from ivr.queue import load_queues, parse_queues
from ivr.replay.scenario import load_scenario
from ivr.testing.fixtures import make_fixtures


def _bomb(levels: int = 6) -> str:
    """Top-level anchors a0..a{levels-1}, each a list of nine aliases of the one before (9^levels strings)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "".join(f"{line}\n" for line in lines)


LOADERS: dict[str, Callable[[Path], object]] = {
    "queues": load_queues,
    "scenario": load_scenario,
    "intents": read_flow_intents,
    "fixtures": make_fixtures,
}


@pytest.mark.parametrize("kind", LOADERS)
def test_an_alias_bomb_is_refused_quickly_at_the_anchor(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(_bomb())
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        LOADERS[kind](path)
    assert time.perf_counter() - started < 3
    [problem] = info.value.diagnostics
    assert str(problem).startswith(f"{path}:4:5: too much YAML: aliases repeating the value anchored here")


@pytest.mark.parametrize("kind", LOADERS)
def test_a_file_over_the_size_limit_is_refused_unread(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text("a: 1\n" + "#" * 1_100_000 + "\n")
    with pytest.raises(ConfigError) as info:
        LOADERS[kind](path)
    [problem] = info.value.diagnostics
    assert str(problem).startswith(f"{path}:1:1: the file is 1.1 MB; ") and "may be at most 1 MB" in str(problem)


def test_queue_text_is_bounded_too() -> None:
    with pytest.raises(ConfigError, match=r"^queues.yaml:4:5: too much YAML: aliases"):
        parse_queues(_bomb(), "queues.yaml")
    with pytest.raises(ConfigError, match=r"^queues.yaml:1:1: the file is 1.1 MB; queue configuration files"):
        parse_queues("a: 1\n" + "#" * 1_100_000, "queues.yaml")


def test_moderate_aliases_are_fine(tmp_path: Path) -> None:
    text = "agents:\n  ann: &agent {uri: 'sip:ann@127.0.0.1'}\n  bob: *agent\nqueues:\n  q: {}\n" + _bomb(3)
    with pytest.raises(ConfigError) as info:
        parse_queues(text, "queues.yaml")
    assert all("too much YAML" not in str(d) for d in info.value.diagnostics)  # only the unknown keys a0..a2
    assert "unknown key 'a0'" in str(info.value)
