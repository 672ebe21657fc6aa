"""ivr: a self-hosted, offline voice IVR and speech-bot server."""

from __future__ import annotations

__version__ = "0.1.0"
