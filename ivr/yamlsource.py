"""YAML with positions, for every file a person writes: flows, queues, replay scenarios, intent datasets.

ruamel.yaml keeps positions on containers only; :func:`parse_yaml` copies its tree into small ``Y`` objects
so a checker can point at any value (or key) when it reports a problem, and collect every problem as a
:class:`~ivr.errors.Diagnostic` naming ``file:line:col``. Checkers walk ``Y`` nodes, never ruamel's tree.

Input is bounded: files over ``MAX_YAML_BYTES`` are refused unread, and a tree that expands to more than
``MAX_YAML_VALUES`` values (aliases repeating lists of aliases: an "alias bomb") is refused while it is
copied, at the alias that blew the budget, instead of taking seconds and hundreds of MB per parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from ivr.errors import Diagnostic

MAX_YAML_BYTES = 1_000_000
"""Largest YAML file read (a big flow is a sign it should be split into sub-flows)."""
MAX_YAML_VALUES = 50_000
"""Most values (mappings, lists, scalars, keys) a file may expand to; the demo hotline has under 2,000."""
FLOW_EMPTY = "the file is empty; a flow needs at least version, name, start and nodes"


@dataclass(eq=False)
class Y:
    """One YAML value with its position. ``kind`` is 'map', 'seq' or 'scalar'.

    For maps, ``entries`` maps each key (as a string) to ``(key_node, value_node)`` in file order.
    """

    kind: str
    line: int
    col: int
    scalar: object = None
    items: list[Y] = field(default_factory=list)
    entries: dict[str, tuple[Y, Y]] = field(default_factory=dict)

    def get(self, key: str) -> Y | None:
        """The value node under ``key`` of a map, or None."""
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> Y | None:
        """The node of the key itself (its position is where the key is written)."""
        entry = self.entries.get(key)
        return entry[0] if entry else None

    def plain(self) -> object:
        """The value as plain Python data (dicts, lists, scalars), positions dropped."""
        if self.kind == "map":
            return {k: v.plain() for k, (_, v) in self.entries.items()}
        if self.kind == "seq":
            return [item.plain() for item in self.items]
        return self.scalar

    def describe(self) -> str:
        """A short name of the value's type for error messages ('a mapping', "the string 'x'", ...)."""
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        value = self.scalar
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"the boolean {str(value).lower()}"
        if isinstance(value, int | float):
            return f"the number {value}"
        return f"the string {str(value)!r}"


class _TooLarge(Exception):
    """The tree expands past ``MAX_YAML_VALUES``; ``line``/``col``: the outermost alias being expanded."""

    def __init__(self, line: int, col: int, aliased: bool) -> None:
        super().__init__(line, col)
        self.line, self.col, self.aliased = line, col, aliased


class _Converter:
    """Copies ruamel's tree into ``Y`` nodes, counting values; a container met again is an alias."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.seen: set[int] = set()
        self.alias_at: tuple[int, int] | None = None  # position of the outermost alias being expanded

    def convert(self, value: object, line: int, col: int) -> Y:
        self.budget -= 1
        if self.budget < 0:
            at = self.alias_at or (line, col)
            raise _TooLarge(at[0], at[1], self.alias_at is not None)
        if not isinstance(value, CommentedMap | CommentedSeq):
            if isinstance(value, str):
                value = str(value)  # drop ruamel's scalar string subclasses
            return Y("scalar", line, col, scalar=value)
        outermost = id(value) in self.seen and self.alias_at is None
        if outermost:
            self.alias_at = (line, col)
        self.seen.add(id(value))
        try:
            return self._container(value)
        finally:
            if outermost:
                self.alias_at = None

    def _container(self, value: CommentedMap | CommentedSeq) -> Y:
        if isinstance(value, CommentedMap):
            node = Y("map", value.lc.line + 1, value.lc.col + 1)
            for key in value:
                kline, kcol = value.lc.key(key)
                vline, vcol = value.lc.value(key)
                key_node = Y("scalar", kline + 1, kcol + 1, scalar=key)
                node.entries[str(key)] = (key_node, self.convert(value[key], vline + 1, vcol + 1))
            return node
        node = Y("seq", value.lc.line + 1, value.lc.col + 1)
        for index, item in enumerate(value):
            iline, icol = value.lc.item(index)
            node.items.append(self.convert(item, iline + 1, icol + 1))
        return node


def _too_big(path: str, size: int, kind: str, advice: str) -> Diagnostic:
    return Diagnostic(path, 1, 1, f"the file is {size / 1e6:.1f} MB; {kind} files may be at most "
                                  f"{MAX_YAML_BYTES / 1e6:g} MB ({advice})")


def _load(text: str, path: str, kind: str, advice: str) -> tuple[Y | None, list[Diagnostic]]:
    """The ``Y`` tree; (None, []) for an empty file; on a problem, one diagnostic."""
    if len(text) > MAX_YAML_BYTES:
        return None, [_too_big(path, len(text.encode("utf-8")), kind, advice)]
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = f"YAML syntax error: {problem}"
        context_mark = exc.context_mark
        if exc.context and context_mark is not None and context_mark is not mark:
            message += (f" ({exc.context.strip()} started at line {context_mark.line + 1}, "
                        f"column {context_mark.column + 1})")
        if "duplicate key" in problem:
            message = f"YAML syntax error: {problem.split(' with value')[0]}; each key may appear only once"
        return None, [Diagnostic(path, line, col, message)]
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad characters)
        return None, [Diagnostic(path, 1, 1, f"YAML syntax error: {exc}")]
    if data is None:
        return None, []
    try:
        return _Converter(MAX_YAML_VALUES).convert(data, 1, 1), []
    except _TooLarge as exc:
        cause = ("aliases repeating the value anchored here (an alias bomb?) expand to" if exc.aliased
                 else "the file holds")
        return None, [Diagnostic(path, exc.line, exc.col, f"too much YAML: {cause} more than {MAX_YAML_VALUES} "
                                                          "values; write the values out or split the file")]


def _read(path: Path, shown_as: str, kind: str, advice: str) -> tuple[str | None, list[Diagnostic]]:
    """The file's text; a missing, unreadable or oversized file is a diagnostic, not an exception."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            return None, [_too_big(shown_as, size, kind, advice)]
        return path.read_text(encoding="utf-8"), []
    except FileNotFoundError:
        return None, [Diagnostic(shown_as, 0, 0, "file not found; check the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(shown_as, 0, 0, f"cannot read the file ({exc}); save it as UTF-8 text")]


def parse_yaml(text: str, path: str, *, kind: str = "flow", advice: str = "move parts into sub-flows",
               empty: str = FLOW_EMPTY) -> tuple[Y | None, list[Diagnostic]]:
    """Parse YAML text into ``Y`` nodes; on a syntax error, an empty file (``empty`` says what belongs in
    it) or input past the size limits return None and one diagnostic at the offending position.

    ``kind`` names the files in the size-limit message ("flow files may be at most 1 MB") and ``advice``
    tells what to do about it."""
    root, problems = _load(text, path, kind, advice)
    if root is None and not problems:
        problems = [Diagnostic(path, 1, 1, empty)]
    return root, problems


def load_yaml_file(path: Path, shown_as: str, *, kind: str = "flow", advice: str = "move parts into sub-flows",
                   empty: str = FLOW_EMPTY) -> tuple[Y | None, list[Diagnostic]]:
    """Read and parse a YAML file as :func:`parse_yaml` does; a missing or unreadable file is a diagnostic,
    not an exception."""
    text, problems = _read(path, shown_as, kind, advice)
    if text is None:
        return None, problems
    return parse_yaml(text, shown_as, kind=kind, advice=advice, empty=empty)
