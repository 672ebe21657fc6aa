"""``ivr serve``: SIP calls routed to flows, the shared speech engines, the store and the web console."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.call import CallSession, SessionConfig
from ivr.call.taping import RecordingPolicy
from ivr.errors import IvrError
from ivr.flow.registry import FlowRegistry
from ivr.flow.schema import flow_fallback_queue
from ivr.hours import OpenCheck
from ivr.metrics import FanOut, Metrics
from ivr.node import check_node_name, default_node_name
from ivr.outbound import OutboundCalls
from ivr.redial import OUTBOUND_CALLS_PER_DAY
from ivr.runtime import FlowRuntime, parse_speech_key
from ivr.services import SpeechServices
from ivr.sip.agents import SipAgentConnector
from ivr.sip.callbacks import SipCallbackDialer
from ivr.sip.channel import SipChannel
from ivr.sip.config import SipConfig
from ivr.sip.edge import EdgeOptions
from ivr.sip.server import OUTBOUND_HEADER
from ivr.sip.service import SipService
from ivr.store.location import default_database

log = logging.getLogger(__name__)

UNROUTED_ANSWERS = ("default", "reject")


@dataclass
class ServerConfig:
    """Everything ``ivr serve`` needs."""

    flows_dir: Path
    node: str = field(default_factory=default_node_name)
    """This node's name among the nodes sharing the database (default: the short host name): the calls it
    holds are recorded as its own."""
    sip: SipConfig = field(default_factory=SipConfig)
    edge: EdgeOptions = field(default_factory=EdgeOptions)
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    database: str = field(default_factory=default_database)
    queues_file: Path | None = None
    """Agent queues (YAML); without it, transfers to a queue name are REFERred to that name."""
    whisper_model: str | None = None
    vosk_model: str | None = None
    session: SessionConfig = field(default_factory=SessionConfig)
    reload_interval: float = 1.0
    default_flow: str | None = None
    """The flow for dialled numbers no flow claims (default: 'hotline' or 'default', else the first by name)."""
    unrouted: str = "default"
    """Calls to numbers no flow claims: 'default' (the default flow answers) or 'reject' (SIP 404)."""
    variables: dict[str, Any] = field(default_factory=dict)
    secret_key: str | None = None
    """Signs console sessions and context links (default: $IVR_SECRET_KEY, else a new one per start)."""
    demo_api_port: int | None = None
    """Serve the demo order service (``ivr.demo``) on 127.0.0.1 at this port (0: any free port); None: off.
    Not started when ``variables`` set ``api_base`` (the flows use a real service)."""
    secure_cookies: bool = False
    """Console cookies only over HTTPS (set when a TLS proxy serves the console)."""
    public_url: str | None = None
    """Where a CRM reaches the console, for ``X-IVR-Context-Url`` links (default: http://web_host:web_port)."""
    crm_webhook: str | None = None
    """POST each queued caller's context (masked, with its context link) to this URL."""
    retention_days: float | None = None
    """Erase transcripts, contexts and recordings of calls older than this (daily, and at start)."""
    daily_report: Any = None
    outbound_per_number_per_day: int = OUTBOUND_CALLS_PER_DAY
    """Outbound calls (``POST /api/calls/outbound``) a number gets a day (429 beyond)."""
    """A :class:`ivr.reports.schedule.DailyReportPlan`: yesterday's report every day at its time."""


class IvrServer:
    """The whole server: start(), then stop(grace) on shutdown."""

    def __init__(self, config: ServerConfig, connector: Any = None,
                 services: dict[str, SpeechServices] | None = None, clock: Callable[[], float] = time.time) -> None:
        """``connector`` rings agents for the queues (default: SIP agent calls, bridged or REFER per queue).
        ``services``: speech engines already loaded, by engine name (e.g. shared by several servers in one
        process); they are used as they are and left running by ``stop``. ``clock`` (Unix time) decides
        business hours: in flows' ``open('…')``, for the queues and in the metrics."""
        check_node_name(config.node)  # raises NodeNameError: refuse to start
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.queue_config: Any = None
        if config.queues_file is not None:
            from ivr.queue.config import load_queues

            self.queue_config = load_queues(config.queues_file)  # raises ConfigError: refuse to start
        server_queues = sorted(self.queue_config.queues) if self.queue_config is not None else None
        if server_queues is not None and config.session.fallback_queue not in server_queues:
            log.warning("the fallback queue '%s' is not in %s: calls of flows without their own fallback_queue go "
                        "to voicemail when a transfer fails", config.session.fallback_queue, config.queues_file)
        # raises FlowError on an invalid flow (a transfer to a queue the queues file lacks, too): refuse to start
        if config.unrouted not in UNROUTED_ANSWERS:
            raise IvrError(f"unrouted must be one of {', '.join(UNROUTED_ANSWERS)}, not {config.unrouted!r}")
        self.hours: OpenCheck | None = None
        if self.queue_config is not None:
            self.hours = OpenCheck(self.queue_config.open_hours(), clock)
        self.flows = FlowRegistry(config.flows_dir, server_queues=server_queues, default_flow=config.default_flow,
                                  on_reload=lambda result: self.metrics.flow_reloads.labels(result=result).inc(),
                                  hour_names=sorted(self.hours.hours) if self.hours is not None else None)
        self.services: dict[str, SpeechServices] = dict(services or {})
        self._shared_services = set(self.services)
        self.unavailable: dict[str, str] = {}  # engine → why it could not load
        self.store: Any = None
        self.acd: Any = None
        self.web: Any = None
        self.web_port = config.web_port
        self.demo_api: Any = None
        if "://" not in config.database and config.edge.var_dir == EdgeOptions().var_dir:
            config.edge.var_dir = Path(config.database).parent / "edge"  # beside the database, as var/ is
        self.sip = SipService(config.sip, config.edge, on_call=self.handle_call, route=self.route)
        self.connector = connector or SipAgentConnector(self.sip)
        self.dialer = SipCallbackDialer(self.sip, config.sip)
        """Calls customers back for the queues that offer callbacks."""
        self.outbound = OutboundCalls(self.sip, config.sip, lambda: self.flow_status()[0], None,
                                      max_per_number_per_day=config.outbound_per_number_per_day)
        """Places the CRMs' outbound calls (``POST /api/calls/outbound``); its store is set by ``start``."""
        self.sip.on_outcome = self._count_sip_outcome
        self.metrics.watch_sip(lambda: self.sip.admission.active_calls, self.sip.rejections)
        self._stop = threading.Event()
        self._reloader = threading.Thread(target=self._reload_loop, name="ivr-reload", daemon=True)
        self._lock = threading.Lock()
        self.secret_key = config.secret_key or os.environ.get("IVR_SECRET_KEY") or secrets.token_hex(32)
        self.purger: Any = None
        self.reporter: Any = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Load the engines the flows need, open the store, start the web console and SIP."""
        from ivr.store import open_store

        if "://" not in self.config.database:
            Path(self.config.database).parent.mkdir(parents=True, exist_ok=True)
        self.store = open_store(self.config.database)
        self.store.node = self.config.node
        self.outbound.attach_store(self.store)
        from ivr.store.sealed_audio import AudioVault

        self.config.session.vault = AudioVault(self.config.session.recordings_dir, self.store.sealer)
        self.config.session.context_url = self.context_url
        self._start_daily_report()
        if self.config.retention_days is not None:
            from ivr.store.retention import RetentionPurger

            self.purger = RetentionPurger(self.store, self.config.retention_days)
            self.purger.start()
        interrupted = self.store.close_unfinished_calls(time.time())
        if interrupted:
            log.warning("%d call(s) left in progress by an earlier run closed as interrupted", len(interrupted))
        if self.queue_config is not None:
            self.acd = self._make_acd()
            self.acd.start()
            self.metrics.watch_queues(self.store, self.queue_config, self.clock)
        self.load_engines()
        self.start_demo_api()
        self._start_web()
        self.sip.start()
        self._reloader.start()
        log.info("ivr node %s serving %d flow(s) on %s, web http://%s:%d", self.config.node,
                 len(self.flow_status()[0]), self.sip.describe(), self.config.web_host, self.web_port)

    def _start_daily_report(self) -> None:
        plan = self.config.daily_report
        if plan is None:
            return
        from ivr.reports.definitions import ReportOptions
        from ivr.reports.schedule import DailyReportScheduler

        plan.options = ReportOptions.from_queues(self.queue_config)
        # On a cluster one node makes it: the ACD leader's (a SQLite database has one node).
        self.reporter = DailyReportScheduler(
            self.store, plan, lambda: self.store.is_sqlite or getattr(self.acd, "leader", None) is not None)
        self.reporter.start()

    def _make_acd(self) -> Any:
        """The ACD: this process's own on SQLite; on PostgreSQL one for every node sharing the database."""
        if self.store.is_sqlite:
            from ivr.queue.engine import Acd

            return Acd(self.queue_config, self.connector, self.store, clock=self.clock, context_url=self.context_url,
                       dialer=self.dialer)
        from ivr.queue.cluster import ClusterAcd

        return ClusterAcd(self.queue_config, self.connector, self.store, self.config.node, self.clock,
                          context_url=self.context_url, dialer=self.dialer)

    def load_engines(self) -> None:
        """Load the recognizers the flows need (``start`` does it first). A flow whose recognizer cannot load
        is not served (see ``flow_status``); raises IvrError when no flow can run."""
        needed = sorted({FlowRuntime(flow).speech_key() for flow in self._all_flows()})
        for key in needed:
            if key in self.services:
                continue
            try:
                self._load_services(key)
            except IvrError as exc:
                # One missing model must not stop the flows that have theirs: calls to flows that need it
                # are refused (404) until a model is installed and the server restarted.
                self.unavailable[key] = str(exc)
                names = [f.name for f in self._all_flows() if FlowRuntime(f).speech_key() == key]
                log.warning("flow(s) %s disabled: the %s recognizer cannot load: %s", ", ".join(names), key, exc)
        if needed and len(self.unavailable) == len(needed):
            raise IvrError("no flow can run: " + "; ".join(self.unavailable.values()))

    def flow_status(self) -> tuple[list[str], dict[str, str]]:
        """The flows calls can reach, and those they cannot with the reason (name → why)."""
        served: list[str] = []
        refused: dict[str, str] = {}
        for flow in self._all_flows():
            key = FlowRuntime(flow).speech_key()
            if key in self.unavailable:
                refused[flow.name] = f"its {key} recognizer cannot load: {self.unavailable[key]}"
            else:
                served.append(flow.name)
        return served, refused

    def start_demo_api(self) -> None:
        """Serve the demo order service when configured (``start`` does it; see ``ServerConfig.demo_api_port``)."""
        if self.config.demo_api_port is None:
            return
        if "api_base" in self.config.variables:
            log.info("demo order API not started: api_base is %s", self.config.variables["api_base"])
            return
        from ivr.demo import DemoOrderApi

        demo = DemoOrderApi(port=self.config.demo_api_port)
        try:
            demo.start()
        except OSError as exc:  # most likely a real order service on that port already
            log.warning("demo order API not started on %s: %s", demo.base_url, exc)
            return
        self.demo_api = demo
        log.info("demo order API on %s (--no-demo-api turns it off)", demo.base_url)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking calls, let current calls finish up to ``grace_seconds``, then shut everything down."""
        self._stop.set()
        if hasattr(self.acd, "drain"):
            self.acd.drain()
        self.sip.stop(grace_seconds)
        self.outbound.close()
        if self.acd is not None:
            self.acd.stop()
        self.dialer.close()
        if self.purger is not None:
            self.purger.stop()
        if self.reporter is not None:
            self.reporter.stop()
        if self.web is not None:
            self.web.shutdown()
        if self.demo_api is not None:
            self.demo_api.stop()
        for engine, services in self.services.items():
            if engine not in self._shared_services:
                services.shutdown()

    # -------------------------------------------------------------------- calls

    def route(self, called: str) -> bool:
        """Whether a dialled number reaches a flow that can run (False: SIP 404). Numbers no flow claims go
        to the default flow, or are refused with ``unrouted='reject'``; the log says which."""
        flow = self.flows.match(called)
        if flow is None:
            if self.config.unrouted == "reject":
                log.warning("call to %s: no flow has this number; refused with 404 (unrouted: reject)", called)
                return False
            flow = self.flows.default()
            log.info("call to %s: no flow has this number; answered by the default flow '%s'", called, flow.name)
        if FlowRuntime(flow).speech_key() in self.unavailable:
            log.warning("call to %s: flow '%s' cannot run (%s); refused with 404", called, flow.name,
                        self.unavailable[FlowRuntime(flow).speech_key()])
            return False
        return True

    def _all_flows(self) -> list[Any]:
        return [self.flows.get(name) for name in self.flows.names()]

    def handle_call(self, channel: SipChannel) -> None:
        """Run one answered call to its end (on the SIP server's worker thread for this call)."""
        variables = self.config.variables
        if OUTBOUND_HEADER in channel.headers:  # a call we placed: its flow was named by the request
            outbound = self.outbound.take(channel.headers[OUTBOUND_HEADER])
            if outbound is None:
                log.warning("call %s: an outbound call nobody asked for (or asked for twice); hanging up",
                            channel.call_id)
                return
            flow = self.flows.get(outbound.flow)
            variables = {**variables, **outbound.variables, "outbound": True}
        else:
            flow = self.flows.route(channel.called)
        runtime = FlowRuntime(flow)
        key = runtime.speech_key()
        services = self.services.get(key) or self._load_services(key)
        interpreter = runtime.new_interpreter(channel, variables, self.hours)
        self.connector.attach(channel.call_id, channel)
        try:
            session = CallSession(channel, interpreter, services, flow_name=flow.name, language=flow.language,
                                  prompts=flow.prompts,
                                  store=self.store, queues=self.acd,
                                  observer=FanOut(self.metrics.observer()), config=self.config.session,
                                  fallback_queue=flow_fallback_queue(flow),
                                  recording=RecordingPolicy(flow.recording.announce) if flow.recording else None)
            session.run()
        finally:
            self.connector.detach(channel.call_id)

    def _count_sip_outcome(self, outcome: str) -> None:
        # Calls refused at the SIP edge never reach a session: count them here (answered calls are counted
        # with the outcome their session ends with).
        if outcome.startswith("rejected_") or outcome == "cancelled":
            self.metrics.calls.labels(outcome=outcome).inc()

    def _load_services(self, key: str) -> SpeechServices:
        """The engine and model ``key`` names (``whisper``, ``whisper:base``, ``vosk:NAME``), loaded once."""
        with self._lock:
            if key not in self.services:
                engine, model, language = parse_speech_key(key)
                if model is None:
                    model = self.config.whisper_model if engine == "whisper" else self.config.vosk_model
                started = time.perf_counter()
                self.services[key] = SpeechServices.create(engine, model, language=language)
                log.info("loaded %s in %.1f s", key, time.perf_counter() - started)
            return self.services[key]

    # ---------------------------------------------------------------------- web

    def _start_web(self) -> None:
        from flask import Response

        from ivr.web.app import create_app
        from ivr.web.serving import WebServer

        app = create_app(self.store, self.acd, {"secret_key": self.secret_key, "public_url": self._public_url(),
                                                "crm_webhook_url": self.config.crm_webhook,
                                                "secure_cookies": self.config.secure_cookies})
        app.extensions["ivr.outbound"] = self.outbound
        app.add_url_rule("/metrics", "metrics",
                         lambda: Response(self.metrics.render(), mimetype="text/plain; version=0.0.4"))
        self.web = WebServer(app, self.config.web_host, self.config.web_port, on_stop=app.extensions["ivr.live"].close)
        self.web_port = self.web.port
        app.extensions["ivr.config"].public_url = self._public_url()  # the real port, when it was 0
        self.web.start()
        from ivr.reports.rollups import keep_up_to_date

        keep_up_to_date(self.store, app.extensions["ivr.report_options"], self._stop)

    def _public_url(self) -> str:
        return self.config.public_url or f"http://{self.config.web_host}:{self.web_port}"

    def context_url(self, call_id: str) -> str:
        """The signed, expiring link to a call's full context (sent as ``X-IVR-Context-Url``)."""
        from ivr.handoff import context_url

        return context_url(self._public_url(), self.secret_key, call_id)

    # ------------------------------------------------------------------ reload

    def _reload_loop(self) -> None:
        while not self._stop.wait(self.config.reload_interval):
            try:
                self.flows.refresh()  # logs each reload (or the errors of a broken edit) once per change
            except Exception:
                log.exception("flow reload failed")
