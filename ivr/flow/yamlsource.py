"""YAML with positions: every mapping, list and scalar remembers its 1-based line and column.

ruamel.yaml keeps positions on containers only; this module copies its tree into small ``Y`` objects so
the flow compiler can point at any value (or key) when it reports a problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from ivr.errors import Diagnostic


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


def _convert(value: object, line: int, col: int) -> Y:
    if isinstance(value, CommentedMap):
        node = Y("map", value.lc.line + 1, value.lc.col + 1)
        for key in value:
            kline, kcol = value.lc.key(key)
            vline, vcol = value.lc.value(key)
            key_node = Y("scalar", kline + 1, kcol + 1, scalar=key)
            node.entries[str(key)] = (key_node, _convert(value[key], vline + 1, vcol + 1))
        return node
    if isinstance(value, CommentedSeq):
        node = Y("seq", value.lc.line + 1, value.lc.col + 1)
        for index, item in enumerate(value):
            iline, icol = value.lc.item(index)
            node.items.append(_convert(item, iline + 1, icol + 1))
        return node
    if isinstance(value, str):
        value = str(value)  # drop ruamel's scalar string subclasses
    return Y("scalar", line, col, scalar=value)


def parse_yaml(text: str, path: str) -> tuple[Y | None, list[Diagnostic]]:
    """Parse YAML text; on a syntax error return None and one diagnostic at the offending position."""
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
        return None, [Diagnostic(path, 1, 1, "the file is empty; a flow needs at least version, name, start "
                                             "and nodes")]
    return _convert(data, 1, 1), []


def load_yaml_file(path: Path, shown_as: str) -> tuple[Y | None, list[Diagnostic]]:
    """Read and parse a YAML file; a missing or unreadable file is a diagnostic, not an exception."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Diagnostic(shown_as, 0, 0, "file not found; check the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(shown_as, 0, 0, f"cannot read the file ({exc}); save it as UTF-8 text")]
    return parse_yaml(text, shown_as)
