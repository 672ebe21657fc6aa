"""The pjsua2 endpoint the test peers (caller, agent phone) share: no sound device, no VAD or echo canceller."""

from __future__ import annotations

import pjsua2 as pj


def start_peer_endpoint(user_agent: str) -> pj.Endpoint:
    """Create and initialise a pjsua2 Endpoint for a test peer in this process (polled, null audio device)."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.uaConfig.userAgent = user_agent
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    cfg.medConfig.clockRate = 16000
    cfg.medConfig.sndClockRate = 16000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    return ep
