"""A loaded flow ready to take calls: picks its speech engine and makes one interpreter per call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.channel import Channel
from ivr.flow.schema import Flow


def engine_for_language(language: str) -> str:
    """The default recognizer for a flow language: the embedded whisper model for English, Vosk otherwise."""
    return "whisper" if language.lower().startswith("en") else "vosk"


@dataclass
class FlowRuntime:
    """One checked flow (shared by all calls that use it)."""

    flow: Flow

    @classmethod
    def from_file(cls, path: str | Path) -> FlowRuntime:
        """Load and check a flow file (raises FlowError listing every problem)."""
        from ivr.flow.loader import load_flow

        return cls(load_flow(Path(path)))

    @property
    def name(self) -> str:
        """The flow's name."""
        return self.flow.name

    @property
    def language(self) -> str:
        """The flow's language (e.g. ``en-US``)."""
        return self.flow.language

    def default_engine(self) -> str:
        """The recognizer engine this flow's language needs."""
        return engine_for_language(self.flow.language)

    def new_interpreter(self, channel: Channel, variables: dict[str, Any] | None = None) -> Any:
        """A fresh interpreter for one call on ``channel``."""
        from ivr.flow.interpreter import CallInterpreter

        call_vars = {
            "caller": channel.caller,
            "called": channel.called,
            "call_id": channel.call_id,
            **(variables or {}),
        }
        return CallInterpreter(self.flow, call_vars=call_vars)
