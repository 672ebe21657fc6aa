"""``ivr users`` (console logins and API tokens) and ``ivr console`` (the console on its own)."""

from __future__ import annotations

import contextlib

import click

from ivr.store import open_store
from ivr.store.location import DATABASE_ENV, DEFAULT_DATABASE
from ivr.web.auth import ROLES, add_user, new_token

DB_OPTION = click.option(
    "--db",
    "--database",
    "db",
    envvar=DATABASE_ENV,
    default=DEFAULT_DATABASE,
    show_default=True,
    help=f"SQLite file or database URL (env {DATABASE_ENV}; the same default as `ivr serve`).",
)


@click.group()
def users() -> None:
    """Console users: agents (same name as in queues.yaml), supervisors, admins."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="agent", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="IVR_PASSWORD",
              help="Asked for when not given (env IVR_PASSWORD).")  # fmt: skip
@DB_OPTION
def users_add(name: str, role: str, password: str, db: str) -> None:
    """Create a user, or reset an existing user's password and role."""
    add_user(open_store(db), name, password, role)
    click.echo(f"user {name} saved with role {role}")


@users.command("list")
@DB_OPTION
def users_list(db: str) -> None:
    """List users and their roles."""
    for user in open_store(db).list_users():
        click.echo(f"{user['name']}\t{user['role']}")


@users.command("remove")
@click.argument("name")
@DB_OPTION
def users_remove(name: str, db: str) -> None:
    """Delete a user and their API tokens."""
    if not open_store(db).delete_user(name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"user {name} removed")


@users.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for.")
@DB_OPTION
def users_token(name: str, label: str, db: str) -> None:
    """Create an API token for NAME (printed once: send it as Authorization: Bearer TOKEN)."""
    click.echo(new_token(open_store(db), name, label))


@click.command()
@DB_OPTION
@click.option("--queues", "queues_path", type=click.Path(dir_okay=False), default=None,
              help="queues.yaml, for queue and agent names.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--secure-cookies", is_flag=True,
              help="Send cookies over HTTPS only (Secure, __Host- prefix); use behind a TLS proxy.")
@click.option("--threads", default=64, show_default=True, type=click.IntRange(4, 1024),
              help="Worker threads: each open console holds one for its live view.")
def console(db: str, queues_path: str | None, host: str, port: int, secure_cookies: bool, threads: int) -> None:
    """Serve the console and API on their own (read-only queues; agent states change where the ACD runs)."""
    import logging

    from ivr.queue import load_queues
    from ivr.web.app import WebConfig, create_app
    from ivr.web.serving import WebServer

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))  # access and sign-in log
    config = WebConfig(queues=load_queues(queues_path) if queues_path else None, secure_cookies=secure_cookies)
    app = create_app(open_store(db), None, config)
    server = WebServer(app, host, port, threads=threads, on_stop=app.extensions["ivr.live"].close)
    click.echo(f"console on http://{host}:{server.port}/")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
