"""Sending a report through the site's mail relay (SMTP): the HTML as the message, the CSVs attached."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from ivr.reports.periods import ReportError


@dataclass(frozen=True)
class MailRelay:
    """Where and to whom reports are mailed."""

    recipients: tuple[str, ...]
    host: str = "localhost"
    port: int = 25
    sender: str = ""
    """Default: ivr@<this host>."""

    @classmethod
    def parse(cls, recipients: Sequence[str], smtp: str, sender: str = "") -> MailRelay:
        """From ``--mail-to`` addresses and ``--smtp HOST[:PORT]``; raises ReportError on a bad value."""
        host, _, port_text = smtp.partition(":")
        if not host or (port_text and not port_text.isdigit()):
            raise ReportError(f"--smtp must be HOST or HOST:PORT (e.g. mail.example.com:25), not {smtp!r}")
        bad = [r for r in recipients if "@" not in r or any(ch.isspace() for ch in r)]
        if bad:
            raise ReportError(f"not an e-mail address: {', '.join(bad)}")
        return cls(tuple(recipients), host, int(port_text or 25), sender)


def mail_report(relay: MailRelay, subject: str, files: Sequence[Path]) -> None:
    """Send the report's HTML file as the message body and its CSV files as attachments."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = relay.sender or f"ivr@{socket.gethostname()}"
    message["To"] = ", ".join(relay.recipients)
    html = [f for f in files if f.suffix == ".html"]
    message.set_content(f"{subject}: open the HTML part or the attached CSV files.")
    if html:
        message.add_alternative(html[0].read_text(encoding="utf-8"), subtype="html")
    for path in files:
        if path.suffix == ".csv":
            message.add_attachment(path.read_bytes(), maintype="text", subtype="csv", filename=path.name)
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise ReportError(f"cannot mail the report through {relay.host}:{relay.port}: {exc}. Check --smtp and "
                          "that the relay accepts mail from this host") from exc
