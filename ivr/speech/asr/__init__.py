"""Offline speech recognition: Vosk (streaming, grammars) and faster-whisper (per utterance).

``load_engine`` returns the process-wide engine for a kind and model, loading it on first use; every
call then asks it for its own recognizer (``engine.new_recognizer(rate, grammar)``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from ivr.errors import ModelError
from ivr.speech.interfaces import AsrEngine

ENGINES = ("whisper", "vosk")

_engines: dict[tuple[str, str, str], AsrEngine] = {}
_lock = threading.Lock()


def resolve_model(kind: str, model: str | Path | None = None) -> Path:
    """The model directory for ``kind``: ``model`` (a path or an installed model's name) or the default.

    Defaults: whisper uses the embedded tiny.en (SHA-256 checked), vosk the Korean package model.
    """
    from ivr.speech import models

    if kind not in ENGINES:
        raise ModelError(f"unknown speech engine {kind!r}; use one of: {', '.join(ENGINES)}")
    if model is None:
        return models.verified_whisper_tiny_en() if kind == "whisper" else models.vosk_korean_dir()
    if kind == "whisper" and str(model) in models.WHISPER_ALIASES:
        return models.whisper_model_dir(str(model))
    found = models.locate(str(model))
    if found.engine != kind:
        raise ModelError(f"{found.path}: this is a {found.engine} model; run it with --engine {found.engine}")
    return found.path


def load_engine(kind: str = "whisper", model: str | Path | None = None, language: str | None = None) -> AsrEngine:
    """The shared engine of ``kind`` ('whisper' or 'vosk') for ``model``, loaded once per process.

    ``language`` (``en``, ``ko``, ``zh`` …) is what a multilingual whisper model listens for (one engine per
    language); English-only and Vosk models ignore it.
    """
    path = resolve_model(kind, model)
    language = (language or "en") if kind == "whisper" else None
    key = (kind, str(path.resolve()), language or "")
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(kind, path, language)
            _engines[key] = engine
        return engine


def _create(kind: str, path: Path, language: str | None) -> AsrEngine:
    if kind == "vosk":
        from ivr.speech.asr.vosk_engine import VoskEngine

        return VoskEngine(path)
    from ivr.speech.asr.whisper_engine import WhisperEngine

    return WhisperEngine(path, language=language or "en")


__all__ = ["ENGINES", "load_engine", "resolve_model"]
