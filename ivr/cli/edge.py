"""``ivr edge``: the Kamailio configuration of a node's SIP edge, for sites that run their own Kamailio."""

from __future__ import annotations

from pathlib import Path

import click

from ivr.sip.config import SipConfig
from ivr.sip.edge import EdgeFiles, EdgeOptions, render_config, render_dispatcher_list, render_tls_config
from ivr.sip.edge_nodes import parse_nodes, render_site_dispatcher_list
from ivr.sip.workers import WorkerAddress, workers_needed


@click.group()
def edge() -> None:
    """The SIP edge (Kamailio) in front of the pjsua2 workers."""


@edge.command("config")
@click.option("--sip-host", default="0.0.0.0", show_default=True, help="Address Kamailio listens on for callers.")
@click.option("--sip-port", default=5060, show_default=True, help="SIP port for callers.")
@click.option("--transport", default="udp,tcp", show_default=True, help="Caller transports: udp, tcp or both.")
@click.option("--tls-port", default=0, help="SIP over TLS on this port (0: off).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="TLS private key (PEM).")
@click.option("--allow-from", multiple=True, help="Source address or network allowed to call (repeatable).")
@click.option("--invite-rate", default=20, show_default=True, help="New calls per second from one source.")
@click.option("--max-calls", default=30, show_default=True, help="The node's --max-calls (sets the worker count).")
@click.option("--worker-host", default="127.0.0.1", show_default=True, help="The node's --worker-host.")
@click.option("--worker-ports", default=5100, show_default=True, help="The node's --worker-ports BASE.")
@click.option("--node", "node_specs", multiple=True, metavar="NAME=HOST:BASE[:MAXCALLS]",
              help="A node behind this Kamailio (repeatable): its --worker-host, --worker-ports and --max-calls "
              "(default --max-calls); replaces --worker-host and --worker-ports.")
@click.option("--nodes", "node_lists", multiple=True, metavar="LIST",
              help="Several --node values, comma-separated.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Write kamailio.cfg, dispatcher.list (and tls.cfg) into this folder instead of printing.")
@click.option("--run-dir", default="/run/kamailio", show_default=True, help="Where Kamailio puts its RPC socket.")
def config(sip_host: str, sip_port: int, transport: str, tls_port: int, tls_cert: Path | None, tls_key: Path | None,
           allow_from: tuple[str, ...], invite_rate: int, max_calls: int, worker_host: str, worker_ports: int,
           node_specs: tuple[str, ...], node_lists: tuple[str, ...], output: Path | None, run_dir: str) -> None:
    """Print (or write) a ready Kamailio configuration for nodes run with ``ivr serve --edge external``.

    One node: --worker-host, --worker-ports and --max-calls as given to its ``ivr serve``. Several: one --node
    NAME=HOST:BASE[:MAXCALLS] each; the dispatcher set then holds every node's workers.
    """
    nodes = parse_nodes((*node_specs, *node_lists), max_calls) if node_specs or node_lists else []
    if nodes:
        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in ("worker_host", "worker_ports")
                 if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if given:
            verb = "describe" if len(given) > 1 else "describes"
            raise click.UsageError(f"{' and '.join(given)} {verb} one node: with --node, give each node's "
                                   "HOST:BASE in its --node instead")
    sip = SipConfig(host=sip_host, port=sip_port, transports=tuple(t.strip() for t in transport.split(",") if t),
                    max_calls=max_calls, allow_from=allow_from)
    sip.check()
    options = EdgeOptions(mode="external", tls_port=tls_port, tls_cert=tls_cert, tls_key=tls_key,
                          invite_rate=invite_rate, worker_host=worker_host, worker_port_base=worker_ports,
                          addresses=(sip_host,))
    folder = (output or Path("/etc/kamailio")).resolve()
    files = EdgeFiles(folder, Path(run_dir))
    if len(nodes) > 1:
        text = render_config(sip, options, files, written_by="ivr edge config", nodes=[n.name for n in nodes])
        dispatcher = render_site_dispatcher_list(nodes)
    else:  # one node: exactly what --worker-host/--worker-ports give
        workers = nodes[0].workers() if nodes else [
            WorkerAddress(i, worker_host, worker_ports + i) for i in range(workers_needed(max_calls))]
        text = render_config(sip, options, files, written_by="ivr edge config")
        dispatcher = render_dispatcher_list(workers, None)
    if output is None:
        click.echo(text, nl=False)
        click.echo(f"\n# {files.dispatcher}:\n" + "".join(f"# {line}\n" for line in dispatcher.splitlines()), nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    files.config.write_text(text)
    files.dispatcher.write_text(dispatcher)
    written = [files.config, files.dispatcher]
    if tls_port:
        files.tls_config.write_text(render_tls_config(options))
        written.append(files.tls_config)
    click.echo("wrote " + ", ".join(str(p) for p in written))
