"""Encryption at rest of what callers said and gave: transcripts, contexts, call events and notes.

Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under one data key per installation:
``IVR_DATA_KEY`` (a Fernet key, or any passphrase, which is stretched into one), else a key file the store
creates beside a SQLite database (``ivr.db.key``, mode 600) or, for a database URL, ``IVR_DATA_KEY_FILE``
(default ``var/ivr-data.key``). Every process that opens the database must find the same key: losing it
loses the transcripts, not the call records.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from ivr.errors import IvrError

log = logging.getLogger(__name__)

SEALED = "sealed"
"""The one key of a JSON value stored encrypted: ``{"sealed": "<token>"}``."""
TEXT_PREFIX = "sealed:"


class DataKeyError(IvrError):
    """The data key is missing, unreadable or not the one the data was encrypted with."""


def _fernet_key(value: str) -> bytes:
    raw = value.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


def key_file_for(url: str) -> Path:
    """Where the data key of a database lives when ``IVR_DATA_KEY`` is not set."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") + ".key")
    return Path(os.environ.get("IVR_DATA_KEY_FILE", "var/ivr-data.key"))


def load_data_key(url: str) -> bytes:
    """The data key for the database at SQLAlchemy ``url`` (creating the key file, mode 600, if need be)."""
    if os.environ.get("IVR_DATA_KEY"):
        return _fernet_key(os.environ["IVR_DATA_KEY"])
    if url == "sqlite://":
        return Fernet.generate_key()  # an in-memory database lives and dies with this process
    path = key_file_for(url)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
            log.info("created the data key %s (keep it with the database backups)", path)
        return _fernet_key(path.read_text())
    except FileExistsError:
        return _fernet_key(path.read_text())  # another process made it first
    except OSError as exc:
        raise DataKeyError(f"cannot read or create the data key {path}: {exc}. Set IVR_DATA_KEY, or make the "
                           "folder writable") from exc


class Sealer:
    """Encrypts and decrypts text and JSON values with the data key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal_text(self, text: str) -> str:
        """An encrypted token for ``text``."""
        return self._fernet.encrypt(text.encode()).decode()

    def open_text(self, token: str) -> str:
        """The text of a token from :meth:`seal_text`."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise DataKeyError("stored data cannot be decrypted: IVR_DATA_KEY or the key file is not the one it "
                               "was written with") from exc

    def seal_bytes(self, data: bytes) -> bytes:
        """An encrypted token (URL-safe base64, no newline) for ``data``."""
        return self._fernet.encrypt(data)

    def open_bytes(self, token: bytes) -> bytes:
        """The bytes of a token from :meth:`seal_bytes`."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise DataKeyError("stored audio cannot be decrypted: IVR_DATA_KEY or the key file is not the one it "
                               "was written with") from exc

    def seal_json(self, value: Any) -> dict[str, str]:
        """A JSON value as stored: ``{"sealed": token}``."""
        return {SEALED: self.seal_text(json.dumps(value, default=str, ensure_ascii=False))}

    def open_json(self, value: Any) -> Any:
        """A stored JSON value, decrypted when it was sealed (older rows are plain)."""
        if isinstance(value, dict) and set(value) == {SEALED}:
            return json.loads(self.open_text(value[SEALED]))
        return value

    def seal_note(self, text: str) -> str:
        """A text column's value: ``sealed:<token>``."""
        return TEXT_PREFIX + self.seal_text(text)

    def open_note(self, text: str) -> str:
        """A text column's value, decrypted when sealed."""
        return self.open_text(text.removeprefix(TEXT_PREFIX)) if text.startswith(TEXT_PREFIX) else text
