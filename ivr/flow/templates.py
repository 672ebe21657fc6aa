"""Templates in prompts, URLs, bodies and conditions: Jinja2's sandbox with strict undefined names.

A string that is exactly one ``{{ expression }}`` keeps the expression's native type when used as a value
(``set``, JSON bodies, transfer context), so ``"{{ attempts + 1 }}"`` stays a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from jinja2 import StrictUndefined, TemplateError, TemplateRuntimeError, Undefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def spell_digits(value: object) -> str:
    """``"1234"`` → ``"1 2 3 4"``, so text-to-speech reads an order number digit by digit."""
    return " ".join(ch for ch in str(value) if not ch.isspace())


def no_hours(name: object) -> bool:
    """``open(name)`` where no calendars are known (a call overrides it with the server's hours)."""
    raise TemplateRuntimeError(f"open({name!r}): no business hours here; define calendars: (or a queue's "
                               "hours:) in the queues file the server runs with")


def make_environment() -> SandboxedEnvironment:
    """The one template environment of all flows: sandboxed, strict, no autoescaping (speech, not HTML)."""
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["digits"] = spell_digits
    env.globals["open"] = no_hours
    return env


ENV = make_environment()
BUILTIN_NAMES = frozenset(ENV.globals)


class TemplateProblem(Exception):
    """A template failed to compile; ``message`` says why."""


@dataclass(eq=False)
class Template:
    """A compiled template string. ``names`` are the variables it reads and ``calendars`` the names it
    passes to ``open('…')`` (both checked at load time)."""

    source: str
    names: frozenset[str] = field(default_factory=frozenset)
    _expression: object = None
    _template: object = None
    calendars: frozenset[str] = field(default_factory=frozenset)

    def text(self, variables: Mapping[str, object]) -> str:
        """Render as text (for prompts, URLs and headers)."""
        if self._template is None:
            return self.source
        return str(self._template.render(variables))  # type: ignore[attr-defined]

    def value(self, variables: Mapping[str, object]) -> object:
        """Render as a value: the native result of a single expression, else the rendered text."""
        if self._expression is not None:
            result = self._expression(**variables)  # type: ignore[operator]
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()  # a bare undefined name: raise like everywhere else
            return result
        return self.text(variables)


def _names_of(source: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(ENV.parse(source))) - BUILTIN_NAMES


def _calendars_of(source: str) -> frozenset[str]:
    """The literal names of ``open('name')`` calls (a name held in a variable is looked up when called)."""
    found = set()
    for call in ENV.parse(source).find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "open" and call.args:
            first = call.args[0]
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                found.add(first.value)
    return frozenset(found)


def compile_template(source: str) -> Template:
    """Compile a template string; raises TemplateProblem with Jinja's message on bad syntax or filters."""
    if "{{" not in source and "{%" not in source and "{#" not in source:
        return Template(source)
    try:
        names = _names_of(source)
        template = ENV.from_string(source)
        expression = None
        match = _SINGLE_EXPRESSION.match(source)
        inner = match.group("expr") if match else ""
        if match and "{{" not in inner and "}}" not in inner:
            expression = ENV.compile_expression(inner, undefined_to_none=False)
    except TemplateError as exc:
        raise TemplateProblem(_describe(exc)) from exc
    return Template(source, names, expression, template, _calendars_of(source))


def compile_condition(source: str) -> Template:
    """Compile a branch condition (a bare Jinja expression such as ``order.status == 'shipped'``)."""
    try:
        names = _names_of("{{ " + source + " }}")
        calendars = _calendars_of("{{ " + source + " }}")
        expression = ENV.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise TemplateProblem(_describe(exc)) from exc
    return Template(source, names, expression, None, calendars)


def _describe(exc: TemplateError) -> str:
    text = str(exc.message if getattr(exc, "message", None) else exc)
    return text.replace("\n", " ")


@dataclass(eq=False)
class TemplateValue:
    """A templated structure (dict, list, scalar) whose strings are templates, rendered recursively."""

    data: object

    def render(self, variables: Mapping[str, object]) -> object:
        """Render every template string inside, keeping single expressions' native types."""
        return _render(self.data, variables)

    def names(self) -> frozenset[str]:
        """All variables the structure reads."""
        found: set[str] = set()
        _collect(self.data, found)
        return frozenset(found)

    def calendars(self) -> frozenset[str]:
        """All names the structure passes to ``open('…')``."""
        found: set[str] = set()
        _collect(self.data, found, "calendars")
        return frozenset(found)


def _render(data: object, variables: Mapping[str, object]) -> object:
    if isinstance(data, Template):
        return data.value(variables)
    if isinstance(data, dict):
        return {key: _render(value, variables) for key, value in data.items()}
    if isinstance(data, list):
        return [_render(value, variables) for value in data]
    return data


def _collect(data: object, found: set[str], what: str = "names") -> None:
    if isinstance(data, Template):
        found.update(data.calendars if what == "calendars" else data.names)
    elif isinstance(data, dict):
        for value in data.values():
            _collect(value, found, what)
    elif isinstance(data, list):
        for value in data:
            _collect(value, found, what)
