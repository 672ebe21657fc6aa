"""Telephony: Kamailio at the edge; pjsua2 endpoints answer calls and hand each one over as a ``SipChannel``.

``SipService`` (``ivr.sip.service``) is what a node runs: the edge, the supervised worker processes and the
one admission. ``SipServer`` is one pjsua2 endpoint (see ``ivr.sip.server`` for its thread model). Only this
package imports pjsua2; ``docs/deploy.md`` describes the deployment.
"""

from __future__ import annotations

from ivr.sip.channel import SipChannel
from ivr.sip.config import RegistrationConfig, SipConfig
from ivr.sip.server import OUTCOMES, SipServer, SipStats

__all__ = ["OUTCOMES", "RegistrationConfig", "SipChannel", "SipConfig", "SipServer", "SipStats"]
