"""A throwaway PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package, no service needed).

``TempPostgres`` runs ``initdb`` and ``postgres`` in a temporary folder on a free loopback port (as the
``nobody`` user when started as root: PostgreSQL refuses to run as root) and hands out fresh databases.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from ivr.errors import IvrError


class PostgresUnavailable(IvrError):
    """PostgreSQL's server programs are not installed (apt install postgresql)."""


def _bindir() -> Path:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if bins:
        return bins[-1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PostgresUnavailable("PostgreSQL is not installed: apt install postgresql")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempPostgres:
    """A PostgreSQL server of its own, stopped and deleted on ``stop`` (or leaving a ``with`` block)."""

    def __init__(self, fsync: bool = False) -> None:
        """``fsync=False`` (tests) trades crash safety for speed; benchmarks keep PostgreSQL's default (on)."""
        self.fsync = fsync
        self.bindir = _bindir()
        self.port = _free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ivr-pg-"))
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.workdir, 65534, 65534)
            self._prefix = ["runuser", "-u", "nobody", "--"]
        self._server: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> TempPostgres:
        """Create the cluster and start the server; returns once it accepts connections."""
        data = self.workdir / "data"
        subprocess.run([*self._prefix, str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "ivr"],
                       check=True, capture_output=True, timeout=120, cwd=self.workdir)
        self._server = subprocess.Popen(
            [*self._prefix, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.workdir), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
             "-c", f"fsync={'on' if self.fsync else 'off'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        import psycopg

        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        """The server's process id (with ``runuser`` in front when started as root: its parent)."""
        assert self._server is not None
        return self._server.pid

    def dsn(self, database: str) -> str:
        """A libpq connection string for ``database``."""
        return f"postgresql://ivr@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its SQLAlchemy URL (``postgresql+psycopg://…``)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # the name is made here, not given
        return f"postgresql+psycopg://ivr@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
            self._server = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
