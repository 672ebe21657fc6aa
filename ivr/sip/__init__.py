"""The SIP edge: a pjsua2 server that answers calls and hands each one over as a ``SipChannel``.

Only this package imports pjsua2. See ``ivr.sip.server`` for the thread model.
"""

from __future__ import annotations

from ivr.sip.channel import SipChannel
from ivr.sip.config import RegistrationConfig, SipConfig
from ivr.sip.server import OUTCOMES, SipServer, SipStats

__all__ = ["OUTCOMES", "RegistrationConfig", "SipChannel", "SipConfig", "SipServer", "SipStats"]
