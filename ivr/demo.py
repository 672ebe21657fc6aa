"""The demo order service: what the demo hotline's order look-up talks to on a fresh install.

``flows/hotline.yaml`` looks orders up at ``{{ api_base }}/orders/<number>`` with ``api_base`` defaulting
to ``http://127.0.0.1:8085``. ``ivr serve`` answers there itself (``--no-demo-api`` turns it off, and it
stays off when ``--var api_base=...`` points the flow at a real service), so a newcomer's first call can
ask for an order without writing a web service first.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, jsonify

log = logging.getLogger(__name__)

DEMO_API_HOST = "127.0.0.1"
DEMO_API_PORT = 8085
"""Where the demo hotline's ``api_base`` points by default."""

DEMO_ORDERS: dict[str, dict[str, str]] = {
    "12345": {"order": "12345", "status": "shipped", "shipped_on": "Monday", "eta": "Thursday"},
    "55555": {"order": "55555", "status": "delivered", "delivered_on": "Tuesday"},
    "24680": {"order": "24680", "status": "processing"},
    "13579": {"order": "13579", "status": "out_for_delivery"},
}
"""The orders the demo knows (any other number is 404, "I couldn't find an order...")."""


def demo_order_app() -> Flask:
    """A WSGI app answering ``GET /orders/<number>`` like the order service the hotline expects."""
    app = Flask("ivr-demo-orders")

    @app.get("/orders/<number>")
    def order(number: str) -> Any:
        found = DEMO_ORDERS.get(number)
        if found is None:
            return jsonify({"error": f"no order {number}"}), 404
        return jsonify(found)

    @app.get("/")
    def index() -> Any:
        return jsonify({"service": "ivr demo orders", "orders": sorted(DEMO_ORDERS)})

    return app


class DemoOrderApi:
    """The demo order service on its own port, in a daemon thread: ``start()``, ``base_url``, ``stop()``."""

    def __init__(self, host: str = DEMO_API_HOST, port: int = DEMO_API_PORT) -> None:
        self.host = host
        self.port = port
        self._server: Any = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (the actual port once started)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Listen (raises OSError when the port is taken, e.g. by a real order service)."""
        from werkzeug.serving import make_server

        self._server = make_server(self.host, self.port, demo_order_app(), threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, name="ivr-demo-orders", daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
