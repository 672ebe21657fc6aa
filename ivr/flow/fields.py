"""Typed reading of YAML values with positions: each reader records a diagnostic instead of raising."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from ivr.errors import Diagnostic
from ivr.yamlsource import Y

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORDS = re.compile(r"[\w']+")


def normalize_utterance(text: str) -> str:
    """Lower-case words separated by single spaces (punctuation dropped): for exact example matches."""
    return " ".join(_WORDS.findall(text.lower()))


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Reader:
    """Collects diagnostics for one file while values are read from it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []

    def error(self, at: Y | None, message: str) -> None:
        """Record a problem at a node's position (line 0 when unknown)."""
        line, col = (at.line, at.col) if at is not None else (0, 0)
        self.diagnostics.append(Diagnostic(self.path, line, col, message))

    def check_keys(self, node: Y, allowed: Iterable[str], where: str) -> None:
        """Report every key of a map that is not in ``allowed`` (with a did-you-mean)."""
        allowed = list(allowed)
        for key, (key_node, _) in node.entries.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(allowed)})"
                self.error(key_node, f"unknown key '{key}' in {where}{hint}")

    def is_map(self, node: Y, what: str) -> bool:
        """True if a mapping; else report that ``what`` must be one."""
        if node.kind == "map":
            return True
        self.error(node, f"{what} must be a mapping (key: value lines), got {node.describe()}")
        return False

    def string(self, node: Y | None, what: str, default: str | None = None) -> str | None:
        """A non-empty string (numbers are accepted and converted, e.g. queue ``1000``)."""
        if node is None:
            return default
        value = node.scalar
        if node.kind == "scalar" and isinstance(value, str) and value.strip():
            return value
        if node.kind == "scalar" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.error(node, f"{what} must be a non-empty string, got {node.describe()}")
        return default

    def name(self, node: Y | None, what: str, default: str | None = None) -> str | None:
        """A string usable as a variable name (letters, digits, underscores)."""
        value = self.string(node, what, default)
        if node is not None and value is not None and not IDENTIFIER.match(value):
            self.error(node, f"{what} '{value}' must be a name made of letters, digits and '_' "
                             "(not starting with a digit)")
            return default
        return value

    def number(self, node: Y | None, what: str, default: float, minimum: float = 0.0,
               positive: bool = False) -> float:
        """A number of at least ``minimum`` (strictly above it when ``positive``)."""
        if node is None:
            return default
        value = node.scalar
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int | float):
            self.error(node, f"{what} must be a number, got {node.describe()}")
            return default
        if value < minimum or (positive and value <= minimum):
            bound = f"greater than {minimum:g}" if positive else f"at least {minimum:g}"
            self.error(node, f"{what} must be {bound}, got {value}")
            return default
        return float(value)

    def integer(self, node: Y | None, what: str, default: int, minimum: int = 0) -> int:
        """A whole number of at least ``minimum``."""
        if node is None:
            return default
        value = node.scalar
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{what} must be a whole number, got {node.describe()}")
            return default
        if value < minimum:
            self.error(node, f"{what} must be at least {minimum}, got {value}")
            return default
        return value

    def boolean(self, node: Y | None, what: str, default: bool) -> bool:
        """true or false."""
        if node is None:
            return default
        if node.kind == "scalar" and isinstance(node.scalar, bool):
            return node.scalar
        self.error(node, f"{what} must be true or false, got {node.describe()}")
        return default

    def string_list(self, node: Y | None, what: str) -> list[tuple[Y, str]]:
        """A list of strings (a single string is accepted as a list of one)."""
        if node is None:
            return []
        if node.kind == "scalar":
            value = self.string(node, what)
            return [(node, value)] if value is not None else []
        if node.kind != "seq":
            self.error(node, f"{what} must be a list of strings, got {node.describe()}")
            return []
        out: list[tuple[Y, str]] = []
        for item in node.items:
            value = self.string(item, f"each item of {what}")
            if value is not None:
                out.append((item, value))
        return out
