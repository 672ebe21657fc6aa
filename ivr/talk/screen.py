"""The live transcript of a call on the terminal: a ``CallObserver`` that prints one line per event.

What the bot says, what the caller is saying (partial results overwrite one line on a terminal), what
was finally recognised, the intent and its confidence, keys, barge-ins, webhooks and transfers. Colours
are used only when the output is a terminal (and ``NO_COLOR`` is not set).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ivr.call import events as ev

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

    def on_event(self, event: ev.CallEvent) -> None:
        """Render one call event (the ones a person at the terminal need not see are skipped)."""
        at = event.at
        match event:
            case ev.PromptPlayed():
                self._line(at, "bot", f"bot     › {event.text or f'[audio {event.audio}]'}")
            case ev.Listening():
                ways = [name for name, on in (("speak", event.speech), ("press keys", event.dtmf)) if on]
                self._line(at, "dim", f"        (listening: {' or '.join(ways) or 'waiting'})")
            case ev.CallerSpeaking():
                self._last_partial = ""
            case ev.PartialHeard():
                self._partial(at, event.text)
            case ev.CallerSaid():
                self._last_partial = ""
                shown = f"caller  » {event.text}" if event.text else "caller  » (nothing recognised)"
                self._line(at, "caller", shown + f"  [asr {event.confidence:.2f}]")
            case ev.IntentFound():
                if not event.intent:  # no intent matched, or the question collected a slot instead
                    self._line(at, "dim", "intent  (none)")
                else:
                    suffix = f" ({event.confidence:.2f})" if event.confidence is not None else ""
                    self._line(at, "intent", f"intent  {event.intent}{suffix}")
            case ev.KeysPressed():
                self._line(at, "caller", f"caller  # keys {event.digits}")
            case ev.NoInputHeard():
                self._line(at, "dim", "        (no input)")
            case ev.BargedIn():
                self._line(at, "dim", f"        (barge-in by {event.by}: prompt stopped)")
            case ev.WebhookCalled():
                self._line(at, "dim", f"http    {event.method.upper()} {event.url}")
            case ev.MessageRecorded():
                self._line(at, "dim", f"        (recorded {event.duration:.1f} s to {event.path})")
            case ev.TransferStarted():
                self._transfer(at, event)
            case ev.BotHungUp():
                self._line(at, "dim", f"        (bot hung up: {event.reason or 'completed'})")
            case ev.CallFailed():
                self._line(at, "error", f"error   {event.error}")
            case ev.TurnLatency():
                self._line(at, "dim", f"        (reply after {event.seconds * 1000:.0f} ms)")
            case ev.CallFinished():
                self._line(at, "dim", f"call ended: {event.outcome}")

    # ----------------------------------------------------------- renderers

    def _partial(self, at: float, text: str) -> None:
        if not self.partials or not text or text == self._last_partial:
            return
        self._last_partial = text
        line = f"caller  ~ {text}"
        if self.tty:
            self._write(_CLEAR_LINE + self._paint("dim", f"{_stamp(at)} {line}"))
            self._partial_open = True
        else:
            self._line(at, "dim", line)

    def _transfer(self, at: float, event: ev.TransferStarted) -> None:
        context = event.context
        details = []
        if context.get("intent"):
            details.append(f"intent={context['intent']}")
        for key, value in (context.get("slots") or {}).items():
            details.append(f"{key}={value}")
        extra = f"  ({', '.join(details)})" if details else ""
        self._line(at, "transfer", f"transfer → {event.target}{extra}")

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


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
