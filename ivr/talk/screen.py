"""The live transcript of a call on the terminal: a ``CallObserver`` that prints one line per event.

What the bot says, what the caller is saying (partial results overwrite one line on a terminal), what
was finally recognised, the intent and its confidence, keys, barge-ins, webhooks and transfers. Colours
are used only when the output is a terminal (and ``NO_COLOR`` is not set).
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

_COLOURS = {
    "bot": "\033[36m",  # cyan
    "caller": "\033[32m",  # green
    "intent": "\033[33m",  # yellow
    "transfer": "\033[35m",  # magenta
    "error": "\033[31m",  # red
    "dim": "\033[2m",
}
_RESET = "\033[0m"
_CLEAR_LINE = "\r\033[K"


class TranscriptScreen:
    """Prints what happens in a call as it happens (pass it as the session's ``observer``)."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None, partials: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.tty = _isatty(self.stream)
        self.color = self.tty and "NO_COLOR" not in os.environ if color is None else color
        self.partials = partials
        self._partial_open = False
        self._last_partial = ""

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Render one session event (unknown kinds are ignored)."""
        render = getattr(self, f"_on_{kind}", None)
        if render is not None:
            render(float(data.get("at") or 0.0), data)

    # ----------------------------------------------------------- renderers

    def _on_prompt(self, at: float, data: dict[str, Any]) -> None:
        text = data.get("text") or f"[audio {data.get('audio')}]"
        self._line(at, "bot", f"bot     › {text}")

    def _on_listen(self, at: float, data: dict[str, Any]) -> None:
        ways = [name for name, on in (("speak", data.get("speech")), ("press keys", data.get("dtmf"))) if on]
        self._line(at, "dim", f"        (listening: {' or '.join(ways) or 'waiting'})")

    def _on_speech_started(self, at: float, data: dict[str, Any]) -> None:
        self._last_partial = ""

    def _on_partial(self, at: float, data: dict[str, Any]) -> None:
        text = str(data.get("text") or "")
        if not self.partials or not text or text == self._last_partial:
            return
        self._last_partial = text
        line = f"caller  ~ {text}"
        if self.tty:
            self._write(_CLEAR_LINE + self._paint("dim", f"{_stamp(at)} {line}"))
            self._partial_open = True
        else:
            self._line(at, "dim", line)

    def _on_transcript(self, at: float, data: dict[str, Any]) -> None:
        self._last_partial = ""
        text = str(data.get("text") or "")
        confidence = _number(data.get("confidence"))
        shown = f"caller  » {text}" if text else "caller  » (nothing recognised)"
        if confidence is not None:
            shown += f"  [asr {confidence:.2f}]"
        self._line(at, "caller", shown)

    def _on_intent(self, at: float, data: dict[str, Any]) -> None:
        intent = data.get("intent")
        confidence = _number(data.get("confidence"))
        if not intent:  # no intent matched, or the question collected a slot instead
            self._line(at, "dim", "intent  (none)")
            return
        suffix = f" ({confidence:.2f})" if confidence is not None else ""
        self._line(at, "intent", f"intent  {intent}{suffix}")

    def _on_dtmf(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "caller", f"caller  # keys {data.get('digits', '')}")

    def _on_no_input(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "dim", "        (no input)")

    def _on_barge_in(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "dim", f"        (barge-in by {data.get('by', 'speech')}: prompt stopped)")

    def _on_http(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "dim", f"http    {str(data.get('method', 'GET')).upper()} {data.get('url', '')}")

    def _on_recording(self, at: float, data: dict[str, Any]) -> None:
        duration = _number(data.get("duration")) or 0.0
        self._line(at, "dim", f"        (recorded {duration:.1f} s to {data.get('path')})")

    def _on_transfer(self, at: float, data: dict[str, Any]) -> None:
        context = data.get("context") or {}
        details = []
        if context.get("intent"):
            details.append(f"intent={context['intent']}")
        for key, value in (context.get("slots") or {}).items():
            details.append(f"{key}={value}")
        extra = f"  ({', '.join(details)})" if details else ""
        self._line(at, "transfer", f"transfer → {data.get('target')}{extra}")

    def _on_hangup(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "dim", f"        (bot hung up: {data.get('reason') or 'completed'})")

    def _on_error(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "error", f"error   {data.get('error')}")

    def _on_turn_latency(self, at: float, data: dict[str, Any]) -> None:
        seconds = _number(data.get("seconds"))
        if seconds is not None:
            self._line(at, "dim", f"        (reply after {seconds * 1000:.0f} ms)")

    def _on_end(self, at: float, data: dict[str, Any]) -> None:
        self._line(at, "dim", f"call ended: {data.get('outcome')}")

    # -------------------------------------------------------------- output

    def _line(self, at: float, style: str, text: str) -> None:
        prefix = _CLEAR_LINE if self._partial_open else ""
        self._partial_open = False
        self._write(prefix + self._paint(style, f"{_stamp(at)} {text}") + "\n")

    def _paint(self, style: str, text: str) -> str:
        return f"{_COLOURS[style]}{text}{_RESET}" if self.color else text

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _stamp(at: float) -> str:
    return f"[{at:6.1f}s]"


def _number(value: object) -> float | None:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
