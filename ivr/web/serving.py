"""The console's HTTP server and access log.

Cheroot (CherryPy's WSGI server: a fixed pool of worker threads, request timeouts, no debugger) instead of
Werkzeug's development server. Responses say ``Server: ivr`` with no version. Each request is logged on
``ivr.web.access`` with its digits masked: a search for a card or phone number must not land in a log file.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus

from cheroot import wsgi

log = logging.getLogger(__name__)
access_log = logging.getLogger("ivr.web.access")

# Three or more digits, maybe split by single spaces, dots, dashes or pluses ("4111 1111", "555-0100").
_DIGIT_RUN = re.compile(r"\d(?:[ .+\-]?\d){2,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def mask_request_target(target: str) -> str:
    """A request path and query as written to logs: decoded, digit runs as '*', control characters as '?'."""
    text = _CONTROL.sub("?", unquote_plus(target))
    return _DIGIT_RUN.sub(lambda m: re.sub(r"\d", "*", m.group()), text)


class AccessLog:
    """WSGI middleware: one log line per request (client, method, masked path and query, status, time)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        target = environ.get("PATH_INFO", "") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")

        def logged_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            access_log.info('%s "%s %s" %s %.0f ms', environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD"),
                            mask_request_target(target), status.split(" ", 1)[0],
                            (time.perf_counter() - started) * 1000)  # fmt: skip
            return start_response(status, headers, exc_info)

        return self.app(environ, logged_start)


class WebServer:
    """Serves a WSGI app on ``host:port`` (port 0: any free port, see :attr:`port`) until :meth:`shutdown`.

    Each open console holds one thread for its live event stream, so ``threads`` bounds the number of
    consoles (and API clients) served at once.
    """

    def __init__(self, app: WsgiApp, host: str, port: int, threads: int = 64,
                 on_stop: Callable[[], None] | None = None) -> None:
        """``on_stop`` runs first at shutdown: it ends long-lived responses (the console's live streams)."""
        self._on_stop = on_stop
        self._server = wsgi.Server((host, port), AccessLog(app), numthreads=threads, server_name="ivr")
        self._server.software = "ivr"
        self._server.max_request_header_size = 64 * 1024  # cheroot's default is unlimited
        self._server.max_request_body_size = 2 * 1024 * 1024  # the app itself refuses bodies over 1 MB
        self._server.error_log = self._error_log  # type: ignore[method-assign]
        self._server.prepare()  # binds now, so a port in use fails here and port 0 is resolved
        self.port: int = self._server.bind_addr[1]
        self._thread: threading.Thread | None = None

    @staticmethod
    def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        log.log(level, "%s", msg, exc_info=traceback)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve, name="ivr-web", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (from another thread) or Ctrl-C."""
        try:
            self._server.serve()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop accepting, finish current requests (up to a few seconds) and close the socket."""
        if self._on_stop is not None:
            self._on_stop()
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
