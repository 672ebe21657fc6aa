"""A flow's webhooks: sent in the webhook pool while the caller hears a filler or comfort noise."""

from __future__ import annotations

import logging

from ivr.call import events as ev
from ivr.call.line import CallLine
from ivr.call.playback import Playback
from ivr.call.records import CallRecords
from ivr.events import HttpResult
from ivr.flow import actions as fa

log = logging.getLogger(__name__)


class Webhooks:
    """Performs a flow's HTTP requests for one call; a webhook that gives no answer in time fails."""

    def __init__(self, line: CallLine, playback: Playback, records: CallRecords) -> None:
        self.line = line
        self.playback = playback
        self.records = records

    def request(self, action: fa.HttpRequest) -> HttpResult:
        """Send the request and wait for its result (the flow's ``on_failure`` path gets a failed one)."""
        line = self.line
        line.notify(ev.WebhookCalled(at=line.now, method=action.method, url=action.url))
        services = line.services
        future = services.submit_webhook(action)
        filler = action.filler
        try:
            # requests' timeout bounds each read, not a reply that trickles in: the call gives up on time
            result = line.wait(future, (lambda: self.playback.say_text(filler)) if filler else None,
                               action.filler_after, give_up_after=services.webhook_deadline(action) + 1.0)
        except TimeoutError:
            log.warning("call %s: webhook %s %s gave no answer in time", line.call_id, action.method, action.url)
            result = HttpResult(ok=False, status=0, error="Timeout: timed out")
        self.records.event(ev.WebhookAnswered(at=line.now, url=action.url, status=result.status, ok=result.ok,
                                              error=result.error))
        return result
