"""A loaded flow ready to take calls: picks its speech engine and makes one interpreter per call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.channel import Channel
from ivr.flow.schema import Flow


def engine_for_language(language: str) -> str:
    """The default recognizer for a flow language: the embedded whisper model for English, Vosk otherwise."""
    return "whisper" if language.lower().startswith("en") else "vosk"


def speech_key(engine: str, model: str | None, language: str = "en") -> str:
    """How a server names a loaded engine: ``whisper`` (its default model), ``whisper:base``, or
    ``whisper:base@ko`` (a multilingual whisper model listening for another language than English)."""
    key = f"{engine}:{model}" if model else engine
    spoken = language.split("-")[0].lower()
    return f"{key}@{spoken}" if engine == "whisper" and spoken != "en" else key


def parse_speech_key(key: str) -> tuple[str, str | None, str]:
    """The (engine, model, language) a ``speech_key`` names."""
    key, _, language = key.partition("@")
    engine, _, model = key.partition(":")
    return engine, model or None, language or "en"


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

    def speech(self) -> tuple[str, str | None]:
        """The recognizer engine and model the flow asks for (``speech:``), else its language's default."""
        settings = self.flow.speech
        return settings.engine or engine_for_language(self.flow.language), settings.model

    def default_engine(self) -> str:
        """The recognizer engine this flow uses."""
        return self.speech()[0]

    def speech_key(self) -> str:
        """The name of the engine and model this flow uses (see ``speech_key``)."""
        return speech_key(*self.speech(), language=self.flow.language)

    def model_for(self, engine: str) -> str | None:
        """The flow's model when it runs on ``engine`` (None, the engine's default, for another engine)."""
        flow_engine, model = self.speech()
        return model if engine == flow_engine else None

    def new_interpreter(self, channel: Channel, variables: dict[str, Any] | None = None,
                        hours: Callable[[str], bool] | None = None) -> Any:
        """A fresh interpreter for one call on ``channel``; ``hours`` answers ``open('name')``."""
        from ivr.flow.interpreter import CallInterpreter

        call_vars = {
            "caller": channel.caller,
            "called": channel.called,
            "call_id": channel.call_id,
            **(variables or {}),
        }
        return CallInterpreter(self.flow, call_vars=call_vars, hours=hours)
