"""Keys typed on the terminal as DTMF: 0-9, * and # reach the call as if pressed on a phone keypad."""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

DTMF_KEYS = frozenset("0123456789*#ABCD")


class TerminalKeys:
    """Reads single key presses from a terminal on a background thread (cbreak mode: no Enter needed,
    Ctrl-C still interrupts) and hands DTMF keys to ``on_key``. Does nothing when stdin is not a TTY.

    ``stop`` (or leaving the ``with`` block) restores the terminal exactly as it was.
    """

    def __init__(self, on_key: Callable[[str], None], fd: int | None = None) -> None:
        self._on_key = on_key
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._saved: list[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether keys are being read."""
        return self._thread is not None

    def start(self) -> TerminalKeys:
        """Start reading if the file descriptor is a terminal."""
        try:
            if not os.isatty(self._fd):
                return self
            import termios
            import tty
        except (ImportError, OSError, ValueError):  # no termios (Windows) or a closed stdin
            return self
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._thread = threading.Thread(target=self._read, name="ivr-talk-keys", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and restore the terminal settings."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> TerminalKeys:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self._fd, 32)
            except OSError:
                return
            if not data:
                return  # end of input
            for key in data.decode("ascii", "ignore").upper():
                if key in DTMF_KEYS:
                    self._on_key(key)
