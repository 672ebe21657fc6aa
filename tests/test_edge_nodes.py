"""``ivr edge config --node …``: one site Kamailio in front of several nodes; ``ivr serve --node`` names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.edge import edge as edge_cli
from ivr.node import NodeNameError, check_node_name, default_node_name
from ivr.sip.edge import EdgeError, find_kamailio
from ivr.sip.edge_nodes import parse_nodes

needs_kamailio = pytest.mark.skipif(find_kamailio() is None, reason="needs Kamailio (apt-get install kamailio)")


def config(*args: str) -> str:
    result = CliRunner().invoke(edge_cli, ["config", "--sip-host", "10.0.0.2", *args])
    assert result.exit_code == 0, result.output
    return result.output


def destinations(listing: str) -> list[tuple[str, str]]:
    return [(line.split()[1], line.split()[4]) for line in listing.splitlines() if line.startswith("1 ")]


@needs_kamailio
def test_three_nodes_share_one_dispatcher_set_that_kamailio_accepts(tmp_path: Path) -> None:
    result = CliRunner().invoke(edge_cli, [
        "config", "--sip-host", "10.0.0.2", "--max-calls", "8", "--node", "a=10.0.0.11:5100:12",
        "--node", "b=10.0.0.12:5100", "--node", "c=10.0.0.11:5200:4", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listing = (tmp_path / "dispatcher.list").read_text()
    # a: 12 calls → 3 workers, b: the --max-calls default (8) → 2, c: 4 → 1; interleaved by node
    assert destinations(listing) == [
        ("sip:10.0.0.11:5100", "duid=a-w0"), ("sip:10.0.0.12:5100", "duid=b-w0"), ("sip:10.0.0.11:5200", "duid=c-w0"),
        ("sip:10.0.0.11:5101", "duid=a-w1"), ("sip:10.0.0.12:5101", "duid=b-w1"), ("sip:10.0.0.11:5102", "duid=a-w2")]
    priorities = [int(line.split()[3]) for line in listing.splitlines() if line.startswith("1 ")]
    assert priorities == sorted(priorities, reverse=True)  # Kamailio keeps the interleaved order
    text = (tmp_path / "kamailio.cfg").read_text()
    assert "# Nodes: a, b, c." in text
    assert 'if (t_check_status("503") && ds_next_dst())' in text  # a full or draining node passes the call on
    assert 'ds_is_from_list("1", "2")' in text  # every node's workers are recognised by the one set
    check = subprocess.run([find_kamailio() or "kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]


def test_without_nodes_or_with_one_the_output_is_the_single_node_one() -> None:
    single = config("--max-calls", "30", "--worker-host", "10.0.0.11", "--worker-ports", "5100")
    assert config("--node", "a=10.0.0.11:5100:30") == single
    assert config("--max-calls", "30", "--nodes", "a=10.0.0.11:5100") == single
    assert "Nodes:" not in single and "ds_next_dst()) {" not in single.split("failure_route")[1].split("486")[0]
    assert "# 1 sip:10.0.0.11:5107 0 0 duid=w7\n" in single  # as before: priority 0, duid w<index>


def test_nodes_as_a_list_or_repeated_are_the_same() -> None:
    repeated = config("--node", "a=10.0.0.11:5100", "--node", "b=10.0.0.12:5100")
    assert config("--nodes", "a=10.0.0.11:5100,b=10.0.0.12:5100") == repeated
    assert config("--node", "a=10.0.0.11:5100", "--nodes", "b=10.0.0.12:5100") == repeated


@pytest.mark.parametrize(("args", "message"), [
    (["--node", "a=h1:5100", "--node", "a=h2:5100"], "node 'a' is given twice"),
    (["--node", "a=h1:5100:30", "--node", "b=h1:5107"], "nodes 'a' and 'b' overlap on h1: ports 5100-5107 and"),
    (["--node", "a=h1"], "--node 'a=h1': expected NAME=HOST:BASE[:MAXCALLS]"),
    (["--node", "a b=h1:5100"], "node name 'a b' is not valid"),
    (["--node", "a=h1:70000"], "BASE '70000' must be a port"),
    (["--node", "a=h1:65530:30"], "past 65535; use a lower BASE"),
    (["--node", "a=h1:5100:0"], "MAXCALLS '0' must be a whole number of at least 1"),
    (["--node", "a=0.0.0.0:5100"], "is not a host the workers can be reached at"),
    (["--node", "a=h1:5100", "--worker-ports", "5300"], "--worker-ports describes one node"),
])
def test_bad_node_lists_are_refused_saying_what_to_do(args: list[str], message: str) -> None:
    result = CliRunner().invoke(edge_cli, ["config", *args])
    assert result.exit_code != 0
    shown = result.output + (str(result.exception) if isinstance(result.exception, EdgeError) else "")
    assert message in shown, shown


def test_same_host_different_ports_and_same_ports_different_hosts_are_fine() -> None:
    nodes = parse_nodes(["a=h1:5100:8,b=h1:5102:8", "c=h2:5100:8"], 30)
    assert [(n.name, list(n.ports)) for n in nodes] == [("a", [5100, 5101]), ("b", [5102, 5103]),
                                                      ("c", [5100, 5101])]
    with pytest.raises(EdgeError, match="overlap"):
        parse_nodes(["a=H1:5100:8", "b=h1:5101:8"], 30)


def test_node_names() -> None:
    assert check_node_name("ivr-a_1") == "ivr-a_1"
    assert check_node_name("x" * 64)
    for bad in ("", "x" * 65, "a.b", "a b", "é"):
        with pytest.raises(NodeNameError, match="letters, digits"):
            check_node_name(bad)
    assert check_node_name(default_node_name())


def test_serve_refuses_a_bad_node_name() -> None:
    from ivr.cli.serve import serve

    result = CliRunner().invoke(serve, ["--node", "node.example.com"])
    assert result.exit_code == 2
    assert "Invalid value for --node" in result.output and "letters, digits, '-' or '_'" in result.output
