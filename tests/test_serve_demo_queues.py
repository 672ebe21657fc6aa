"""The shipped demo flows with the shipped ``config/queues.yaml``, over real SIP: no caller is dropped.

An IvrServer serves ``flows/`` (hotline: whisper; korean: Vosk) with the queues file from ``config/``, its
agents' addresses pointed at pjsua2 agent phones (other processes). A pjsua2 caller presses keys.
- billing: "press 2, then 1" reaches the billing queue and rings the billing agent with the call's context
  (it used to say "Connecting you to billing" and hang up: the queue did not exist);
- Korean, nobody logged in: the caller is offered voicemail in Korean, never English, and the message is kept.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.server import IvrServer, ServerConfig
from ivr.sip.config import SipConfig
from ivr.testing.sip_agent import AgentPhone
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def phones() -> Iterator[dict[str, AgentPhone]]:
    started = {name: AgentPhone() for name in ("alice", "jisoo")}
    yield started
    for phone in started.values():
        phone.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, phones: dict[str, AgentPhone]) -> Iterator[IvrServer]:
    folder = tmp_path_factory.mktemp("demo")
    queues = (ROOT / "config" / "queues.yaml").read_text()
    for name, phone in phones.items():
        queues, count = re.subn(rf"sip:{name}@127\.0\.0\.1:\d+", phone.uri(name), queues)
        assert count == 1, f"config/queues.yaml has no agent {name}; update this test"
    (folder / "queues.yaml").write_text(queues)
    config = ServerConfig(flows_dir=ROOT / "flows", sip=SipConfig(host="127.0.0.1", port=0, max_calls=8, log_level=0),
                          web_port=0, database=str(folder / "ivr.db"), queues_file=folder / "queues.yaml")
    config.session.recordings_dir = str(folder / "recordings")
    srv = IvrServer(config)
    srv.start()
    yield srv
    for name in phones:
        srv.acd.set_agent_state(name, "offline")
    srv.stop(5)


def dial(srv: IvrServer, number: str, script: str) -> dict[str, Any]:
    """Place a call with ``script``; the finished call as the store has it."""
    since = time.time()
    result = place_call(f"sip:{number}@127.0.0.1:{srv.sip.port}", script, timeout=120)
    assert result.connected, result
    calls: list[dict[str, Any]] = []

    def finished() -> bool:
        calls[:] = [srv.store.get_call(c["id"]) for c in srv.store.list_calls(since=since - 1)]
        return bool(calls) and all(c["ended_at"] for c in calls)

    assert wait_for(finished, 15), calls
    [call] = calls
    return call


def bot_said(call: dict[str, Any]) -> list[str]:
    return [t["text"] for t in call["turns"] if t["speaker"] == "bot"]


def test_billing_press_2_then_1_rings_the_billing_agent_with_context(server: IvrServer,
                                                                     phones: dict[str, AgentPhone]) -> None:
    phones["alice"].clear()
    phones["alice"].set_mode("answer", after=0.5)
    server.acd.set_agent_state("alice", "available")
    # The menu ends ~11.5 s after the answer; the billing answer and the offer take ~12 s more.
    call = dial(server, "1000", "wait 11.5; dtmf 2; wait 14; dtmf 1; wait 6; hangup")
    incoming = phones["alice"].wait_for("incoming")
    assert incoming is not None, bot_said(call)
    assert incoming["headers"]["X-IVR-Queue"] == "billing"
    assert incoming["headers"]["X-IVR-Intent"] == "billing"
    assert call["outcome"] == "transferred" and call["agent"] == "alice", (call["outcome"], bot_said(call))
    assert not any(e["kind"] == "transfer_failed" for e in call["events"])


def test_korean_caller_with_no_agent_leaves_a_voicemail_in_korean(server: IvrServer,
                                                                   espeak_wav: Callable[..., Path]) -> None:
    server.acd.set_agent_state("jisoo", "offline")  # nobody for support_ko: its overflow is voicemail
    message = espeak_wav("안녕하세요. 주문 때문에 전화했습니다. 다시 전화해 주세요.", voice="ko", rate=8000,
                         lead=0.2, tail=0.2)
    # The caller presses 0 during the menu, waits for the greeting's beep, speaks and hangs up.
    call = dial(server, "2000", f"wait 12; dtmf 0; wait 9; play {message}; hangup")
    said = bot_said(call)
    assert call["outcome"] == "voicemail", (call["outcome"], said)
    assert any("메시지를 남겨 주세요" in text for text in said), said
    english = [text for text in said if re.search(r"[A-Za-z]{3,}", text)]
    assert not english, english  # not one English system prompt on the Korean line
    [recording] = [e for e in call["events"] if e["kind"] == "recording"]
    assert recording["data"]["duration"] > 2.0  # the message is kept although the caller hung up to end it

