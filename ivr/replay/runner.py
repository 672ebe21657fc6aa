"""Run replay scenarios through the same VAD, ASR, NLU, flow and TTS code a SIP call uses."""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ivr.audio.wavfile import write_wav
from ivr.call import CallResult, CallSession, SessionConfig
from ivr.call import events as ev
from ivr.errors import ConfigError, Diagnostic
from ivr.flow.loader import load_flow
from ivr.flow.schema import flow_fallback_queue
from ivr.queue.config import AcdConfig, load_queues
from ivr.queue.connector import OfferResult
from ivr.queue.engine import Acd
from ivr.replay.channel import ReplayChannel
from ivr.replay.scenario import Scenario, load_scenario
from ivr.runtime import FlowRuntime
from ivr.services import SpeechServices
from ivr.testing.fakes import FakeConnector


@dataclass
class ReplayReport:
    """The outcome of one scenario: pass/fail, the reasons, and a readable transcript of the call."""

    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    result: CallResult | None = None
    events: list[ev.CallEvent] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.failures

    def render(self) -> str:
        """The transcript and the verdict as text for a terminal."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"=== {self.scenario.name} ({self.scenario.path}) {verdict}", *self.transcript]
        lines += [f"  ✗ {failure}" for failure in self.failures]
        return "\n".join(lines)


class _Recorder:
    """Observes the session: feeds the scripted caller and writes the readable transcript."""

    def __init__(self, channel: ReplayChannel, report: ReplayReport) -> None:
        self.channel = channel
        self.report = report

    def on_event(self, event: ev.CallEvent) -> None:
        self.channel.on_event(event)
        self.report.events.append(event)
        text = _transcript_line(event)
        if text:
            self.report.transcript.append(f"[{event.at:6.2f}] {text}")


def _transcript_line(event: ev.CallEvent) -> str | None:
    """The line of the readable transcript for ``event`` (None: not shown)."""
    match event:
        case ev.PromptPlayed():
            return f"BOT: {event.text or '[audio ' + str(event.audio) + ']'}"
        case ev.CallerSaid():
            return f"CALLER: {event.text!r} (confidence {event.confidence:.2f}, {event.endpoint} end)"
        case ev.KeysPressed():
            return f"CALLER keys: {event.digits}"
        case ev.NoInputHeard():
            return "(no input)"
        case ev.BargedIn():
            return f"(caller barged in by {event.by})"
        case ev.IntentFound():
            return f"  → intent {event.intent} ({event.confidence or 0:.2f})" if event.intent else None
        case ev.WebhookCalled():
            return f"webhook {event.method} {event.url}"
        case ev.TransferFailed():
            return f"TRANSFER to {event.target} FAILED: {event.error}"
        case ev.AgentConnected():
            return f"AGENT {event.agent} took the call ({event.mode})"
        case ev.TransferStarted():
            return f"TRANSFER → {event.target}"
        case ev.QueueOverflowed():
            return f"queue overflow → {event.kind} {event.target} ({event.reason})"
        case ev.MessageRecorded():
            return f"(recorded {event.duration:.1f} s)"
        case ev.BotHungUp():
            return f"BOT hangs up ({event.reason})"
        case ev.CallFailed():
            return f"ERROR {event.error}"
        case ev.RecognitionTimed():
            return f"  recognition {event.seconds * 1000:.0f} ms"
        case ev.TurnLatency():
            return f"  turn latency {event.seconds * 1000:.0f} ms"
    return None


class MockWebServer:
    """Serves a scenario's mock webhooks (``"GET /path": {status, json}``) on 127.0.0.1."""

    def __init__(self, routes: dict[str, dict[str, Any]]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> MockWebServer:
        """Start serving (in a daemon thread)."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> MockWebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                key = f"{self.command} {self.path}"
                outer.requests.append(key)
                route = outer.routes.get(key, {"status": 404, "json": {"error": "not found"}})
                time.sleep(float(route.get("delay", 0)))
                body = json.dumps(route.get("json", {})).encode()
                self.send_response(int(route.get("status", 200)))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class ReplayRunner:
    """Runs scenarios, sharing loaded speech engines between them."""

    def __init__(
        self,
        engine: str | None = None,
        model: str | None = None,
        realtime: bool = False,
        record_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.realtime = realtime
        self.record_dir = record_dir
        self._services: dict[tuple[str, str | None, str], SpeechServices] = {}

    def services(self, engine: str, model: str | None, language: str = "en") -> SpeechServices:
        """The speech services for an engine and model (listening for ``language``), loaded once."""
        key = (engine, model, language)
        if key not in self._services:
            self._services[key] = SpeechServices.create(engine, model, language=language)
        return self._services[key]

    def run_file(self, path: str | Path) -> ReplayReport:
        """Load and run one scenario file."""
        return self.run(load_scenario(path))

    def run(self, scenario: Scenario) -> ReplayReport:
        """Run one scenario and check its expectations."""
        report = ReplayReport(scenario)
        started = time.perf_counter()
        queues = _replay_queues(scenario.queues, scenario.agents) if scenario.queues is not None else None
        server_queues = sorted(queues.queues) if queues is not None else None
        runtime = FlowRuntime(load_flow(scenario.flow, server_queues=server_queues))
        engine = self.engine or scenario.engine or runtime.default_engine()
        model = self.model or scenario.model or runtime.model_for(engine)
        services = self.services(engine, model, runtime.language.split("-")[0].lower())
        channel = ReplayChannel(
            scenario.steps,
            scenario.audio,
            scenario.rate,
            caller=scenario.caller,
            called=scenario.called,
            realtime=self.realtime,
        )
        acd = None
        if queues is not None:  # the ACD's timers run on the call clock, ticking every frame
            acd = _replay_acd(queues, scenario.agents, clock=lambda: channel.now)
            channel.on_frame = acd.tick
        with MockWebServer(scenario.http) as web, tempfile.TemporaryDirectory(prefix="ivr-replay-") as recordings:
            variables = {k: (web.base_url if v == "$HTTP" else v) for k, v in scenario.variables.items()}
            interpreter = runtime.new_interpreter(channel, variables)
            session = CallSession(
                channel, interpreter, services, flow_name=runtime.name, language=runtime.language,
                prompts=runtime.flow.prompts, observer=_Recorder(channel, report), queues=acd,
                fallback_queue=flow_fallback_queue(runtime.flow), config=SessionConfig(recordings_dir=recordings),
            )
            report.result = session.run()
        report.seconds = time.perf_counter() - started
        _check(report, channel)
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            write_wav(self.record_dir / f"{scenario.name}.caller.wav", bytes(channel.caller_audio), scenario.rate)
            write_wav(self.record_dir / f"{scenario.name}.bot.wav", bytes(channel.bot_audio), scenario.rate)
        return report

    def close(self) -> None:
        """Stop the worker pools."""
        for services in self._services.values():
            services.shutdown()


def _replay_queues(path: Path, agents: tuple[str, ...]) -> AcdConfig:
    """The scenario's queues file, checked to know the scenario's ``agents``."""
    config = load_queues(path)
    unknown = [name for name in agents if name not in config.agents]
    if unknown:
        raise ConfigError([Diagnostic(str(path), 0, 0, f"agent(s) {', '.join(unknown)} of the scenario are not in "
                                                       f"this queues file; agents: {', '.join(config.agents)}")])
    return config


def _replay_acd(config: AcdConfig, agents: tuple[str, ...], clock: Callable[[], float]) -> Acd:
    """The scenario's ACD: ``agents`` are logged in and answer at once, the others are logged out."""
    acd = Acd(config, FakeConnector(auto={name: OfferResult.ANSWERED for name in agents}), clock=clock)
    for name in agents:
        acd.set_agent_state(name, "available")
    return acd


def _norm(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def _contains(prompts: list[str] | tuple[str, ...], wanted: str) -> bool:
    return _norm(wanted) in _norm(" ".join(prompts))


def _check(report: ReplayReport, channel: ReplayChannel) -> None:
    scenario = report.scenario
    result = report.result
    assert result is not None
    fail = report.failures.append
    for entry in channel.log:
        for wanted in entry.step.bot:
            if not _contains(entry.prompts_before, wanted):
                fail(
                    f"line {entry.step.line}: expected the bot to say {wanted!r} before this step; it said "
                    f"{entry.prompts_before!r}"
                )
    for wanted in scenario.final_bot:
        if not _contains(channel.prompts_since_last_step, wanted):
            fail(f"expected the bot to end by saying {wanted!r}; it said {channel.prompts_since_last_step!r}")
    for step in channel.steps_left:
        fail(f"line {step.line}: the call ended before this caller step")
    expect = scenario.expect
    context = result.context
    if "outcome" in expect and result.outcome != expect["outcome"]:
        fail(f"expected outcome {expect['outcome']!r}, got {result.outcome!r}")
    if "intent" in expect:
        seen = [str(e.intent) for e in report.events if isinstance(e, ev.IntentFound) and e.intent]
        if str(expect["intent"]) not in seen:
            fail(f"expected intent {expect['intent']!r}, detected {seen or 'none'}")
    for name, value in (expect.get("slots") or {}).items():
        got = (context.get("slots") or {}).get(name)
        if str(got) != str(value):
            fail(f"expected slot {name} = {value!r}, got {got!r}")
    for name, value in (expect.get("variables") or {}).items():
        got = (context.get("variables") or {}).get(name)
        if str(got) != str(value):
            fail(f"expected variable {name} = {value!r}, got {got!r}")
    if "transfer" in expect:
        want = expect["transfer"] or {}
        transfers = [e for e in report.events if isinstance(e, ev.TransferStarted)]
        targets = [e.target for e in transfers]
        if not targets:
            fail(f"expected a transfer to {want}, there was none")
        else:
            for failed in (e for e in report.events if isinstance(e, ev.TransferFailed)):
                fail(f"the transfer to {failed.target!r} failed: {failed.error}")
            target = targets[-1]
            wanted_target = want.get("queue") or want.get("uri")
            if wanted_target and target != wanted_target:
                fail(f"expected a transfer to {wanted_target!r}, got {target!r}")
            agents = [e.agent for e in report.events if isinstance(e, ev.AgentConnected)]
            if want.get("agent") and want["agent"] not in agents:
                fail(f"expected agent {want['agent']!r} to take the call, got {agents or 'no agent'}")
            transfer_ctx = transfers[0].context
            for key in want.get("context", []):
                if key not in transfer_ctx and key not in (transfer_ctx.get("slots") or {}):
                    fail(f"expected context key {key!r} in the transfer, got {sorted(transfer_ctx)}")
    if "barge_in" in expect:
        happened = any(isinstance(e, ev.BargedIn) for e in report.events)
        if happened != bool(expect["barge_in"]):
            fail(f"expected barge_in={expect['barge_in']}, it {'did' if happened else 'did not'} happen")
    prompts = [e.text for e in report.events if isinstance(e, ev.PromptPlayed)]
    for wanted in expect.get("prompts", []):
        if not _contains(prompts, wanted):
            fail(f"expected the bot to say {wanted!r} at some point")
    for unwanted in expect.get("no_prompt", []):
        if _contains(prompts, unwanted):
            fail(f"the bot said {unwanted!r}, which it must not")
    errors = [e.error for e in report.events if isinstance(e, ev.CallFailed)]
    if errors:
        fail("the call hit an internal error: " + "; ".join(errors))
