"""Whole-graph checks of compiled nodes: loops that never wait for the caller, sub-flows that never return.

They run once every link resolves (``FlowCompiler`` pass two) and return what is wrong as plain data; the
compiler turns it into ``file:line:col`` diagnostics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from ivr.flow.graph import node_edges
from ivr.flow.schema import AskNode, Flow, HangupNode, Node, RecordNode, ReturnNode, SubflowNode, TransferNode

WAITS = (AskNode, RecordNode, TransferNode, HangupNode, ReturnNode, SubflowNode)
"""Nodes that wait for the caller or end this flow's turn (a sub-flow may ask; it is checked on its own)."""


def _successors(nodes: Mapping[str, Node]) -> dict[str, list[str]]:
    return {name: [target for target, _, _ in node_edges(node, nodes)] for name, node in nodes.items()}


def _reach(start: str, succ: Mapping[str, list[str]]) -> dict[str, str | None]:
    """Nodes reachable from ``start`` in one or more steps, each with the node it was first reached from."""
    parent: dict[str, str | None] = {}
    todo = deque([(start, target) for target in succ.get(start, [])])
    while todo:
        came_from, name = todo.popleft()
        if name in parent:
            continue
        parent[name] = came_from
        todo.extend((name, target) for target in succ.get(name, []))
    return parent


def loops_without_wait(nodes: Mapping[str, Node]) -> list[list[str]]:
    """Each loop a call can enter and never leave without waiting for the caller (say/set/goto/branch/http
    only, every way out leading back in): the path from its first node (in file order) back to it."""
    succ = _successors(nodes)
    loops: list[list[str]] = []
    reported: set[str] = set()
    for name, node in nodes.items():
        if isinstance(node, WAITS) or name in reported:
            continue
        parent = _reach(name, succ)
        if name not in parent:
            continue  # not on a loop
        region = set(parent)
        if any(isinstance(nodes[n], WAITS) or not succ[n] for n in region):
            continue  # something in reach waits, or the flow ends there
        path = [name]
        step = parent[name]
        while step is not None and step != name and step not in path:
            path.append(step)
            step = parent[step]
        loops.append([name, *reversed(path[1:]), name])
        reported |= region
    return loops


def subflow_returns(sub: Flow) -> bool:
    """Whether a ``return`` node of the sub-flow can be reached from its start (so the caller's ``next``
    runs)."""
    if sub.start not in sub.nodes:
        return True  # reported as a missing start in the sub-flow itself
    reached = {sub.start, *_reach(sub.start, _successors(sub.nodes))}
    return any(isinstance(sub.nodes[n], ReturnNode) for n in reached)
