"""``ivr serve``: answer SIP calls with the flows in a folder; web console, API and metrics alongside."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from ivr.call import SessionConfig
from ivr.demo import DEMO_API_HOST, DEMO_API_PORT
from ivr.redial import OUTBOUND_CALLS_PER_DAY
from ivr.store.location import DATABASE_ENV, DEFAULT_DATABASE


@click.command()
@click.option("--node", default=None, metavar="NAME",
              help="This node's name among several sharing the database (letters, digits, '-', '_'; "
              "default: the short host name).")
@click.option("--flows", "flows_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("flows"),
              show_default=True, help="Folder of flow YAML files (hot-reloaded).")
@click.option("--sip-host", default="0.0.0.0", show_default=True, help="Address to listen on for SIP.")
@click.option("--sip-port", default=5060, show_default=True, help="SIP port.")
@click.option("--transport", default="udp,tcp", show_default=True, help="SIP transports: udp, tcp or both.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Address of the web console.")
@click.option("--web-port", default=8080, show_default=True, help="Port of the web console, API and /metrics.")
@click.option("--max-calls", default=30, show_default=True,
              help="Concurrent calls, incoming and outbound; more get 503.")
@click.option("--outbound-per-day", type=click.IntRange(min=1), default=OUTBOUND_CALLS_PER_DAY, show_default=True,
              help="Outbound calls (POST /api/calls/outbound) one number gets a day; more get 429.")
@click.option("--allow-from", multiple=True, help="Source address or network allowed to call (repeatable).")
@click.option("--edge", "edge_mode", type=click.Choice(["auto", "kamailio", "external", "none"]), default="auto",
              show_default=True, help="SIP edge: Kamailio as a child (auto when installed), your own Kamailio "
              "(external), or none (one pjsua2 endpoint on the port, at most 4 calls).")
@click.option("--tls-port", default=0, help="SIP over TLS on this port (0: off); needs --tls-cert and --tls-key.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="TLS private key (PEM).")
@click.option("--invite-rate", default=20, show_default=True,
              help="New calls per second from one source address; more get 503 at the edge.")
@click.option("--edge-address", multiple=True, metavar="IP[:PORT]",
              help="--edge external: where your Kamailio sends calls from (workers take SIP only from it).")
@click.option("--worker-host", default="127.0.0.1", show_default=True, help="Address the SIP workers listen on.")
@click.option("--worker-ports", default=0, metavar="BASE",
              help="Worker i listens on BASE+i (0: any free port; --edge external needs it).")
@click.option("--register", "registrar", metavar="URI", help="Register with this registrar/PBX (e.g. sip:pbx:5060).")
@click.option("--sip-user", help="Username for registration (digest authentication).")
@click.option("--sip-password", envvar="IVR_SIP_PASSWORD", help="Password for registration (or $IVR_SIP_PASSWORD).")
@click.option("--database", "--db", "database", envvar=DATABASE_ENV, default=DEFAULT_DATABASE, show_default=True,
              help=f"SQLite path or database URL (env {DATABASE_ENV}; the same default as `ivr users`).")
@click.option("--queues", "queues_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Agent queues YAML (default: config/queues.yaml when it exists).")
@click.option("--default-flow", default=None, metavar="NAME",
              help="Flow for dialled numbers no flow claims (default: hotline or default, else the first).")
@click.option("--unrouted", type=click.Choice(["default", "reject"]), default="default", show_default=True,
              help="Calls to numbers no flow claims: answered by the default flow, or refused (SIP 404).")
@click.option("--fallback-queue", default="support", show_default=True, help="Queue used after an error.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Flow variable for every call.")
@click.option("--secure-cookies", is_flag=True,
              help="Send console cookies over HTTPS only (Secure, __Host- prefix); use behind a TLS proxy.")
@click.option("--crm-webhook", metavar="URL", help="POST each queued caller's context (masked, with a signed "
              "context_url to the full one) to this CRM URL.")
@click.option("--public-url", metavar="URL", help="Where a CRM reaches the console, for the signed "
              "X-IVR-Context-Url links (default: http://WEB_HOST:WEB_PORT).")
@click.option("--retention-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Erase transcripts, contexts and recordings of calls older than this many days "
              "(checked at start and once a day; default: keep).")
@click.option("--daily-report-at", metavar="HH:MM", default=None,
              help="Write yesterday's report (HTML + CSV, see `ivr report daily`) every day at this local time.")
@click.option("--daily-report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/reports"),
              show_default=True, help="Folder for the daily reports.")
@click.option("--daily-report-webhook", metavar="URL", default=None, help="Also POST each daily report here.")
@click.option("--daily-report-mail-to", multiple=True, metavar="ADDRESS",
              help="Also mail each daily report to this address (repeatable; relay: --smtp).")
@click.option("--smtp", default="localhost:25", show_default=True, metavar="HOST[:PORT]",
              help="The mail relay for --daily-report-mail-to.")
@click.option("--grace", default=30.0, show_default=True, help="Seconds current calls may finish on shutdown.")
@click.option("--demo-api/--no-demo-api", default=True, show_default=True,
              help=f"Answer the demo hotline's order look-ups on {DEMO_API_HOST}:{DEMO_API_PORT} (off when a "
                   "--var api_base is given, or the port is taken).")
def serve(node: str | None, flows_dir: Path, sip_host: str, sip_port: int, transport: str, web_host: str, web_port: int,
          max_calls: int, outbound_per_day: int, allow_from: tuple[str, ...], edge_mode: str, tls_port: int,
          tls_cert: Path | None,
          tls_key: Path | None, invite_rate: int, edge_address: tuple[str, ...], worker_host: str, worker_ports: int,
          registrar: str | None, sip_user: str | None,
          sip_password: str | None, database: str, queues_file: Path | None, default_flow: str | None,
          unrouted: str, fallback_queue: str, variables: tuple[str, ...], secure_cookies: bool,
          crm_webhook: str | None, public_url: str | None, retention_days: float | None,
          daily_report_at: str | None, daily_report_dir: Path, daily_report_webhook: str | None,
          daily_report_mail_to: tuple[str, ...], smtp: str, grace: float, demo_api: bool) -> None:
    """Answer SIP calls with the flows in FLOWS (routed by dialled number; the hotline is the default)."""
    from ivr.node import NodeNameError, check_node_name, default_node_name
    from ivr.server import IvrServer, ServerConfig
    from ivr.sip.config import RegistrationConfig, SipConfig
    from ivr.sip.edge import EdgeOptions

    try:
        node = check_node_name(node) if node is not None else default_node_name()
    except NodeNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--node") from None
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    extra = {}
    for item in variables:
        name, _, value = item.partition("=")
        if not name or not _:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        extra[name] = value
    registration = None
    if registrar:
        if not sip_user or sip_password is None:
            raise click.UsageError("--register needs --sip-user and --sip-password (or $IVR_SIP_PASSWORD)")
        registration = RegistrationConfig(registrar=registrar, username=sip_user, password=sip_password)
    sip = SipConfig(host=sip_host, port=sip_port, transports=tuple(t.strip() for t in transport.split(",") if t),
                    max_calls=max_calls, allow_from=allow_from, registration=registration)
    if queues_file is None and Path("config/queues.yaml").is_file():
        queues_file = Path("config/queues.yaml")
    edge = EdgeOptions(mode=edge_mode, tls_port=tls_port, tls_cert=tls_cert, tls_key=tls_key, invite_rate=invite_rate,
                       addresses=edge_address, worker_host=worker_host, worker_port_base=worker_ports)
    config = ServerConfig(flows_dir=flows_dir, node=node, sip=sip, edge=edge, web_host=web_host, web_port=web_port,
                          database=database, queues_file=queues_file, default_flow=default_flow, unrouted=unrouted,
                          session=SessionConfig(fallback_queue=fallback_queue), variables=extra,
                          demo_api_port=DEMO_API_PORT if demo_api else None, secure_cookies=secure_cookies,
                          crm_webhook=crm_webhook, public_url=public_url, retention_days=retention_days,
                          outbound_per_number_per_day=outbound_per_day)
    if daily_report_at is not None:
        from ivr.reports.mail import MailRelay
        from ivr.reports.schedule import DailyReportPlan

        mail = MailRelay.parse(daily_report_mail_to, smtp) if daily_report_mail_to else None
        config.daily_report = DailyReportPlan(DailyReportPlan.parse_time(daily_report_at), daily_report_dir,
                                              daily_report_webhook, mail)
    server = IvrServer(config)
    server.start()
    click.echo(serve_banner(server, web_host))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    click.echo(f"ivr: stopping; letting current calls finish (up to {grace:.0f} s)")
    server.stop(grace)


def serve_banner(server: Any, web_host: str) -> str:
    """What ``ivr serve`` prints once it answers calls: the flows it serves (with their numbers), why any
    other flow is not served, the console and the demo order API."""
    served, refused = server.flow_status()
    flows = ", ".join(_with_numbers(server.flows.get(name)) for name in served)
    lines = [f"ivr: serving {flows} on {server.sip.describe()} as node {server.config.node}; console "
             f"http://{web_host}:{server.web_port}/  (Ctrl-C stops)"]
    lines += [f"ivr: not serving {name}: {why}" for name, why in refused.items()]
    if server.demo_api is not None:
        lines.append(f"ivr: demo order API on {server.demo_api.base_url} (--no-demo-api turns it off)")
    return "\n".join(lines)


def _with_numbers(flow: Any) -> str:
    return f"{flow.name} ({', '.join(flow.numbers)})" if flow.numbers else flow.name
