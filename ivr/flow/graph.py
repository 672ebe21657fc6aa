"""A flow as a Graphviz DOT diagram: one box per node (type, name, prompt), labelled edges.

Only builds the DOT text; rendering it to SVG/PNG (running ``dot``) is the CLI's job.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from ivr.flow.schema import (
    AnswerNode,
    AskNode,
    BranchNode,
    Flow,
    GotoNode,
    HangupNode,
    HttpNode,
    Node,
    RecordingNode,
    RecordNode,
    SayNode,
    SetNode,
    SubflowNode,
    TransferNode,
)
from ivr.flow.templates import Template

_STYLE: dict[str, str] = {
    "say": 'shape=box, style="rounded,filled", fillcolor="#e8f1fb"',
    "ask": 'shape=box, style="rounded,filled,bold", fillcolor="#fff4d6"',
    "branch": 'shape=diamond, style=filled, fillcolor="#eeeeee"',
    "set": 'shape=box, style="filled", fillcolor="#f4f4f4"',
    "http": 'shape=box3d, style=filled, fillcolor="#e6f5e6"',
    "transfer": 'shape=box, style="rounded,filled,bold", fillcolor="#fde2e2"',
    "record": 'shape=box, style="rounded,filled", fillcolor="#f0e6fa"',
    "recording": 'shape=box, style="rounded,dashed", fillcolor="#f0e6fa"',
    "goto": 'shape=cds, style=filled, fillcolor="#f4f4f4"',
    "subflow": 'shape=tab, style=filled, fillcolor="#e6f0f0"',
    "hangup": 'shape=box, style="rounded,filled,bold", fillcolor="#dddddd"',
    "return": 'shape=box, style="rounded,filled", fillcolor="#dddddd"',
    "answer": 'shape=note, style=filled, fillcolor="#e8f1fb"',
}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrap(text: str, width: int = 38, lines: int = 4) -> str:
    wrapped = textwrap.wrap(" ".join(text.split()), width) or [""]
    if len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], wrapped[lines - 1][: width - 1] + "…"]
    return "\\n".join(part.replace("\\", "\\\\").replace('"', '\\"') for part in wrapped)


def _source(template: Template | None) -> str:
    return template.source if template is not None else ""


def _detail(node: Node) -> str:
    """The text shown under a node's name: its prompt, slot, URL or target."""
    if isinstance(node, SayNode):
        return _source(node.text) or f"♪ {node.audio}"
    if isinstance(node, AskNode):
        what = f"[{node.slot} → {node.save_as}] " if node.slot else ""
        return what + (_source(node.prompt) or (f"♪ {node.audio}" if node.audio else ""))
    if isinstance(node, HttpNode):
        return f"{node.method} {node.url.source} → {node.save_as}"
    if isinstance(node, TransferNode):
        target = f"queue {_source(node.queue)}" if node.queue else _source(node.uri)
        return f"{target}. {_source(node.say)}"
    if isinstance(node, RecordNode):
        return f"{_source(node.prompt)} [→ {node.save_as}]"
    if isinstance(node, SetNode):
        return ", ".join(node.values)
    if isinstance(node, RecordingNode):
        return "recording paused" if node.pause else "recording resumed"
    if isinstance(node, SubflowNode):
        return node.path
    if isinstance(node, HangupNode):
        return _source(node.say) or node.reason
    if isinstance(node, AnswerNode):
        return f"from knowledge: {_source(node.question) or 'last utterance'}"
    return ""


def node_edges(node: Node, nodes: Mapping[str, Node]) -> list[tuple[str, str, str]]:
    """(target, label, style) for each way out of a node (to a node of ``nodes``)."""
    out: list[tuple[str, str, str]] = []
    if isinstance(node, AskNode):
        keys: dict[str, list[str]] = {}
        for key, intent in node.dtmf.items():
            keys.setdefault(intent, []).append(key)
        for intent, target in node.on.items():
            dtmf = f" / {','.join(keys[intent])}" if intent in keys else ""
            out.append((target, f"{intent}{dtmf}", "solid"))
        if node.next:
            out.append((node.next, "confirmed" if node.confirm else "next", "solid"))
        if node.on_question:
            out.append((node.on_question, "question", "solid"))
        for which, handler in (("no_input", node.no_input), ("no_match", node.no_match)):
            exit_to = handler.goto or node.otherwise
            if exit_to:
                out.append((exit_to, f"{which} ×{handler.retries + 1}", "dashed"))
    elif isinstance(node, BranchNode):
        out.extend((case.goto, case.condition.source, "solid") for case in node.cases)
        out.append((node.otherwise, "otherwise", "dashed"))
    elif isinstance(node, HttpNode):
        out.append((node.next, "ok", "solid"))
        if node.on_failure:
            out.append((node.on_failure, "failure", "dashed"))
    elif isinstance(node, GotoNode):
        out.append((node.target, "goto", "solid"))
    elif isinstance(node, AnswerNode):
        out.append((node.next, "answered", "solid"))
        out.append((node.otherwise, "unanswered", "dashed"))
    elif isinstance(node, SayNode | SetNode | RecordNode | RecordingNode | SubflowNode):
        out.append((node.next, "", "solid"))
    return [(t, label, style) for t, label, style in out if t in nodes]


def flow_to_dot(flow: Flow) -> str:
    """The DOT source of a flow diagram (render with ``dot -Tsvg``)."""
    lines = [
        f"digraph {_q(flow.name)} {{",
        "  rankdir=TB; newrank=true;",
        f"  label={_q(f'{flow.name} ({flow.language}) — {flow.path}')}; labelloc=t; fontname=Helvetica;",
        '  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9, color="#555555"];',
        '  "__start" [shape=circle, label="start", style=filled, fillcolor="#333333", fontcolor=white, '
        "width=0.6];",
        f'  "__start" -> {_q(flow.start)};',
    ]
    for node in flow.nodes.values():
        detail = _detail(node)
        label = f"{node.kind.upper()}: {node.name}"
        body = f"{label}\\n{_wrap(detail)}" if detail else label
        lines.append(f"  {_q(node.name)} [label=\"{body}\", {_STYLE[node.kind]}, tooltip={_q(node.kind)}];")
    for node in flow.nodes.values():
        merged: dict[tuple[str, str], list[str]] = {}
        for target, edge_label, style in node_edges(node, flow.nodes):
            merged.setdefault((target, style), []).append(edge_label)
        for (target, style), labels in merged.items():
            label = "\\n".join(_wrap(part, 30, 2) for part in labels if part)
            lines.append(f'  {_q(node.name)} -> {_q(target)} [label="{label}", style={style}];')
    g = flow.globals
    agent_label = "agent" + (f" / {g.agent_dtmf}" if g.agent_dtmf else "") + " (anywhere)"
    specials = [(g.agent_target, agent_label), (g.max_turns_target, f"> {g.max_turns} turns"),
                (g.on_error, "on error")]
    for index, (special, special_label) in enumerate(specials):
        if special and special in flow.nodes:
            anchor = f"__global{index}"
            lines.append(f'  "{anchor}" [shape=plaintext, label={_q(special_label)}, fontcolor="#aa3333"];')
            lines.append(f'  "{anchor}" -> {_q(special)} [style=dotted, color="#aa3333"];')
    if not g.on_error:
        fallback = g.fallback_queue or (flow.queues[0] if flow.queues else "")
        text = f"on error: apologise, transfer to {fallback}" if fallback else "on error: apologise, hang up"
        lines.append(f'  "__on_error" [shape=note, label={_q(text)}, fontcolor="#aa3333"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
