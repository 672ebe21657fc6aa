"""Shared test helpers: real speech audio made with espeak-ng and sox."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ivr.testing.postgres import PostgresUnavailable, TempPostgres


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run the README's test command (it installs it)")
    return path


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder for synthesized caller audio."""
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def espeak_wav(speech_dir: Path) -> Callable[..., Path]:
    """Factory: speak ``text`` with espeak-ng into a mono WAV at ``rate`` Hz (cached per arguments).

    ``lead`` and ``tail`` add seconds of silence before and after the speech, like a caller's line.
    """

    def make(text: str, rate: int = 16000, voice: str = "en-us", speed: int = 160,
             lead: float = 0.5, tail: float = 1.0) -> Path:
        key = f"{abs(hash((text, rate, voice, speed, lead, tail)))}"
        out = speech_dir / f"{key}.wav"
        if out.exists():
            return out
        raw = speech_dir / f"{key}.raw.wav"
        subprocess.run([_need("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
        subprocess.run(
            [_need("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
             "pad", str(lead), str(tail)],
            check=True,
        )
        raw.unlink()
        return out

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres]:
    """One real PostgreSQL server for the test session (Debian's postgresql package)."""
    pytest.importorskip("psycopg")
    try:
        server = TempPostgres().start()
    except PostgresUnavailable:
        pytest.fail("PostgreSQL is not installed; run the README's test command (it installs it)")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: TempPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL); its data key lives in ``tmp_path``."""
    monkeypatch.setenv("IVR_DATA_KEY_FILE", str(tmp_path / "data.key"))  # a database URL has no folder of its own
    return postgres_server.new_database()
