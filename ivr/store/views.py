"""What each audience sees of a call: the people handling it, and everyone and everything else.

Sensitivity is declared in the flow (``sensitive: card | secret | none`` on a slot or variable) and travels
in the call context as ``context["sensitive"]`` (name → kind). Three levels:

- :func:`for_handoff`: what leaves the bot at all (the store, the agent's screen, the signed context link).
  Card numbers keep only their last 4 digits, ``secret`` values are replaced by ``****``; everything else
  the caller said or gave is in full. The agent offered the call or on it, and supervisors, see this.
- :func:`for_others`: logs, metrics, webhooks to third parties, SIP headers, other agents. On top of the
  above, every collected value not declared ``none`` is masked, and so is every run of 8+ digits in text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ivr.store.masking import (
    KEEP_DIGITS,
    UNMASKED_KEYS,
    is_card_number,
    mask_cards,
    mask_sensitive,
    mask_value,
)

SECRET_MASK = "****"
SENSITIVITY = ("card", "secret", "none")
# Context keys the bot itself fills (not values the caller gave).
_OWN_KEYS = frozenset({"flow", "call_id", "caller", "called", "node", "path", "intent", "confidence", "turns",
                       "outcome", "error", "sensitive", "fallback_reason", "queue", "priority"})


def card_mask(value: object) -> str:
    """A card number as anyone may see it: its last 4 digits."""
    if "*" in str(value):
        return str(value)  # masked already
    digits = re.sub(r"\D", "", str(value))
    return "*" * max(0, len(digits) - KEEP_DIGITS) + digits[-KEEP_DIGITS:] if digits else SECRET_MASK


def _keep_last_digits(text: str) -> str:
    to_mask = sum(ch.isdigit() for ch in text) - KEEP_DIGITS
    out = []
    for ch in text:
        if ch.isdigit() and to_mask > 0:
            ch, to_mask = "*", to_mask - 1
        out.append(ch)
    return "".join(out)


def _swap_secret(_: re.Match[str]) -> str:
    return SECRET_MASK


def _swap_card(match: re.Match[str]) -> str:
    return _keep_last_digits(match.group())


def _declared(context: Mapping[str, Any]) -> dict[str, str]:
    sensitive = context.get("sensitive")
    return {str(k): str(v) for k, v in sensitive.items()} if isinstance(sensitive, Mapping) else {}


def _hidden_values(context: Mapping[str, Any], declared: Mapping[str, str]) -> list[tuple[str, str]]:
    """(raw text, replacement) for every declared card or secret value, to find them in free text too."""
    found: list[tuple[str, str]] = []
    for group in ("slots", "variables"):
        values = context.get(group)
        if not isinstance(values, Mapping):
            continue
        for name, value in values.items():
            kind = declared.get(str(name))
            if kind in ("card", "secret") and isinstance(value, str | int) and not isinstance(value, bool):
                raw = str(value).strip()
                if len(raw) >= 2 and raw != SECRET_MASK:
                    found.append((raw, card_mask(raw) if kind == "card" else SECRET_MASK))
    return sorted(found, key=lambda pair: -len(pair[0]))


def _text_cleaner(hidden: list[tuple[str, str]], base: Callable[[str], str]) -> Callable[[str], str]:
    def clean(text: str) -> str:
        for raw, replacement in hidden:
            if raw in text:
                text = text.replace(raw, replacement)
            elif raw.isdigit() and len(raw) >= 4:
                # spoken or spaced out: "1 2 3 4", "one two three four"
                spaced = r"\W*".join(re.escape(d) for d in raw)
                swap = _swap_secret if replacement == SECRET_MASK else _swap_card
                text = re.sub(rf"(?<!\d){spaced}(?!\d)", swap, text)
        return base(text)

    return clean


def _walk(value: object, text: Callable[[str], str], key: str = "") -> object:
    if key in UNMASKED_KEYS:
        return value
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        return {k: _walk(v, text, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, text) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and is_card_number(value):
        return card_mask(value)
    return value


def _level(value: object, kind: str | None, others: bool) -> object:
    if kind == "secret":
        return SECRET_MASK
    if kind == "card" or (isinstance(value, str | int) and not isinstance(value, bool) and is_card_number(value)):
        return card_mask(value)
    if others and kind != "none" and value is not None and not isinstance(value, bool):
        if isinstance(value, Mapping):
            return {k: _level(v, None, True) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_level(v, None, True) for v in value]
        return mask_value(value)
    return value


def _context(context: Mapping[str, Any], others: bool) -> dict[str, Any]:
    declared = _declared(context)
    text = _text_cleaner(_hidden_values(context, declared), mask_sensitive if others else mask_cards)
    out: dict[str, Any] = {}
    for key, value in context.items():
        if key in ("slots", "variables") and isinstance(value, Mapping):
            out[key] = {k: _walk(_level(v, declared.get(str(k)), others), text) for k, v in value.items()}
        elif key in _OWN_KEYS:
            out[key] = value if key == "sensitive" else _walk(value, text, key)
        elif key == "utterances" and isinstance(value, list):
            out[key] = [_walk({k: (_level(v, None, others) if k == "value" else v) for k, v in u.items()}, text)
                        if isinstance(u, Mapping) else _walk(u, text) for u in value]
        elif key == "last_text":
            out[key] = _walk(value, text)
        else:  # extra keys a transfer adds ("order": "{{ slots.order }}"): collected values too
            out[key] = _walk(_level(value, declared.get(key), others), text)
    return out


def for_handoff(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context as it may leave the bot: cards to their last 4 digits, secrets masked, the rest in full."""
    return _context(context, others=False)


def for_others(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context as logs, webhooks to third parties, SIP headers and other agents see it."""
    return _context(context, others=True)


def text_for_handoff(text: str, context: Mapping[str, Any] | None = None) -> str:
    """Free text (a transcript turn, a note) for the people handling the call."""
    declared = _declared(context or {})
    return _text_cleaner(_hidden_values(context or {}, declared), mask_cards)(text)


def text_for_others(text: str, context: Mapping[str, Any] | None = None) -> str:
    """Free text for everyone else."""
    declared = _declared(context or {})
    return _text_cleaner(_hidden_values(context or {}, declared), mask_sensitive)(text)


def call_view(call: Mapping[str, Any], *, handling: bool) -> dict[str, Any]:
    """A stored call as shown to a person: ``handling`` for the agent offered the call or on it and for
    supervisors (collected values in full, cards' last 4 digits, secrets masked); else masked."""
    context = dict(call.get("context") or {})
    for entry in call.get("queue_entries") or []:
        context = {**(entry.get("context") or {}), **context}
    text = text_for_handoff if handling else text_for_others
    view_context = for_handoff if handling else for_others
    out = dict(call)
    out["turns"] = [{**t, "text": text(t["text"], context)} for t in call.get("turns", [])]
    out["notes"] = [{**n, "text": text(n["text"], context)} for n in call.get("notes", [])]
    out["events"] = [{**e, "data": _walk(e["data"], lambda s: text(s, context))} for e in call.get("events", [])]
    out["context"] = view_context(call.get("context") or {})
    out["queue_entries"] = [{**e, "context": view_context({"sensitive": context.get("sensitive", {}),
                                                           **(e.get("context") or {})})}
                            for e in call.get("queue_entries", [])]
    return out
