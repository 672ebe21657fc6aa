"""``ivr flows``: check call flows (``validate``) and draw them (``graph``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

from ivr.errors import IvrError
from ivr.flow.graph import flow_to_dot
from ivr.flow.knowledge import compile_knowledge, looks_like_knowledge
from ivr.flow.loader import check_flow, load_flow
from ivr.yamlsource import load_yaml_file

FLOW_SUFFIXES = (".yaml", ".yml")


def _flow_files(paths: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in FLOW_SUFFIXES and p.is_file())
            if not found:
                raise IvrError(f"{raw}: no .yaml flow files in this directory")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise IvrError(f"{raw}: no such file or directory")
    return files


@click.group("flows")
def flows() -> None:
    """Check and draw YAML call flows."""


DEFAULT_QUEUES_FILE = Path("config/queues.yaml")


def _queue_names(queues: str | None) -> tuple[list[str], list[str] | None, list[str] | None]:
    """``--queues``: a queues file (its names are the only valid targets, its calendars and queues the only
    names ``open('…')`` takes) or names that add to each flow's own ``queues:``. Without the option,
    ``config/queues.yaml`` when it exists (as ``ivr serve`` does)."""
    from ivr.queue.config import load_queues

    if queues is None:
        if not DEFAULT_QUEUES_FILE.is_file():
            return [], None, None
        queues = str(DEFAULT_QUEUES_FILE)
    if queues.endswith((".yaml", ".yml")) or Path(queues).is_file():
        config = load_queues(queues)
        return [], sorted(config.queues), sorted(config.hour_names())
    return [q.strip() for q in queues.split(",") if q.strip()], None, None


@flows.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--queues", default=None, metavar="FILE|A,B",
              help="The server's queues file (every transfer target must be in it; default: config/queues.yaml "
                   "when it exists), or queue names that add to each flow's 'queues:'.")
def validate(paths: tuple[str, ...], queues: str | None) -> None:
    """Check flow files (or every .yaml file of a directory), and knowledge files named directly, and print
    every problem as file:line:col: message. Exits 1 if there is any."""
    known, server_queues, hour_names = _queue_names(queues)
    failed = 0
    for path in _flow_files(paths):
        if looks_like_knowledge(load_yaml_file(path, str(path))[0]):
            diagnostics = compile_knowledge(path, str(path))[1]
        else:
            diagnostics = check_flow(path, known, server_queues, hour_names)
        if diagnostics:
            failed += 1
            for diagnostic in diagnostics:
                click.echo(str(diagnostic))
        else:
            click.echo(f"ok {path}")
    if failed:
        click.echo(f"{failed} flow file(s) with errors", err=True)
        sys.exit(1)


@flows.command("graph")
@click.argument("flow", type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file: .svg, .png, .pdf or .dot (default: FLOW with .svg).")
def graph(flow: str, output: str | None) -> None:
    """Draw a flow as a diagram: nodes by type with their prompts, edges labelled by intent, key,
    no_input/no_match and conditions."""
    compiled = load_flow(flow, classifier_factory=None)
    out = Path(output) if output else Path(flow).with_suffix(".svg")
    dot_source = flow_to_dot(compiled)
    fmt = out.suffix.lstrip(".").lower()
    if fmt == "dot":
        out.write_text(dot_source, encoding="utf-8")
    elif fmt in ("svg", "png", "pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise IvrError("Graphviz 'dot' is not installed; install it (apt-get install graphviz) or write "
                           "a .dot file with -o flow.dot")
        result = subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input=dot_source.encode(),
                                capture_output=True, check=False)
        if result.returncode != 0:
            raise IvrError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    else:
        raise IvrError(f"{out}: unknown diagram format '.{fmt}'; use .svg, .png, .pdf or .dot")
    click.echo(f"wrote {out} ({len(compiled.nodes)} nodes)")
