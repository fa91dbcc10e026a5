"""The ``partsflow`` command."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from services import bootstrap
from services.stack import GATEWAYS, StackError, start_stack
from shared.auth import ROLES, UserError, UserStore
from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging

SERVICE_NAMES = click.Choice(list(bootstrap.SERVICES))


def _settings(embedded: bool = False, **overrides: Any) -> Settings:
    try:
        return load_settings(overrides, embedded=embedded)
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None


@click.group()
def main() -> None:
    """Partsflow: spare parts for medical-imaging field service."""


@main.command()
@click.option("--demo", is_flag=True, help="Load demo warehouses, parts, stock and users.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def run(demo: bool, host: str, port: int) -> None:
    """Run the whole system in one process (SQLite, in-process bus)."""
    from services.embedded import EmbeddedSystem

    settings = _settings(embedded=True)
    configure_logging(settings.log_level, settings.log_format)
    system = EmbeddedSystem(settings)
    lines = [f"Partsflow is running on http://{host}:{port}/  (data in {settings.data_dir})"]
    if demo:
        from services.demo import load_demo

        lines += load_demo(system)
    elif not UserStore(system.settings.users_path).names():
        lines.append(
            "No users yet: create one with  partsflow users add NAME --role admin --password"
        )
    system.start_background()
    click.echo("\n".join(lines), err=True)
    try:
        system.serve(host, port)
    except KeyboardInterrupt:
        pass
    finally:
        system.close()


@main.command()
@click.argument("service", type=SERVICE_NAMES)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Handler threads (default PARTSFLOW_CONSUMER_THREADS).",
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="Serve /healthz, /readyz and /metrics here (default PARTSFLOW_WORKER_PORT, 0: none).",
)
def worker(service: str, threads: int | None, port: int | None) -> None:
    """Run a service's relay, consumer and scheduler (production)."""
    settings = _settings() if port is None else _settings(worker_port=port)
    configure_logging(settings.log_level, settings.log_format)
    status = bootstrap.create_worker(service, settings, consumer_threads=threads).run_forever()
    sys.exit(status)


@main.command()
@click.argument("service", type=SERVICE_NAMES)
@click.option("--bind", default="127.0.0.1:8001", show_default=True)
@click.option("--workers", default=4, show_default=True, type=int)
def web(service: str, bind: str, workers: int) -> None:
    """Serve a service's web app under gunicorn (production)."""
    _settings()  # fail here, with one line, rather than in every gunicorn worker
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            bind,
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "20",
            # Several gunicorns on one machine would share (and remove) one control
            # socket; nothing here uses it.
            "--no-control-socket",
            f"services.{service}:create_app()",
        ],
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the gateway listens.")
@click.option("--port", default=8080, show_default=True, type=int, help="The gateway's port.")
@click.option(
    "--web-port",
    default=8001,
    show_default=True,
    type=int,
    help="The first web server's port, the others follow (0: any free ports).",
)
@click.option(
    "--gateway",
    type=click.Choice(GATEWAYS),
    default="auto",
    show_default=True,
    help="auto: nginx if installed, else a small Python proxy.",
)
def stack(host: str, port: int, web_port: int, gateway: str) -> None:
    """Run the production processes here, on the local PostgreSQL and RabbitMQ."""
    try:
        status = start_stack(
            os.environ,
            host=host,
            port=port,
            web_port=web_port,
            gateway=gateway,
            say=lambda line: click.echo(line, err=True),
        )
    except (ConfigError, StackError) as error:
        raise click.ClickException(str(error)) from None
    sys.exit(status)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("services", nargs=-1, type=SERVICE_NAMES)
def db_upgrade(services: tuple[str, ...]) -> None:
    """Bring the services' schemas up to date (all of them when none is named)."""
    settings = _settings(embedded=True) if _embedded_defaults() else _settings()
    for service in services or tuple(bootstrap.SERVICES):
        try:
            bootstrap.upgrade_databases(settings, [service])
        except OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0]
            raise click.ClickException(
                f"cannot open the {service} database: {reason} (create it first, or let "
                "`partsflow stack` create what is missing)"
            ) from None
    click.echo(f"upgraded: {', '.join(services or tuple(bootstrap.SERVICES))}")


@main.group()
def users() -> None:
    """Users and their API tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", "ask_password", is_flag=True, help="Also set a login password.")
def users_add(name: str, role: str, ask_password: bool) -> None:
    """Create a user and print a new API token (the last line of output)."""
    settings = _settings(embedded=True) if _embedded_defaults() else _settings()
    password = _read_password() if ask_password else None
    try:
        token = UserStore(settings.users_path).add(name, role, password)
    except UserError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"user {name} ({role}) saved in {settings.users_path}; API token:", err=True)
    click.echo(token)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password again: ")
    else:
        first = sys.stdin.readline().rstrip("\n")
        second = sys.stdin.readline().rstrip("\n")
    if first != second:
        raise click.ClickException("the two passwords differ")
    return first


def _embedded_defaults() -> bool:
    """Administrative commands work on the embedded data dir unless a secret key
    says this is a production installation."""
    return not os.environ.get("PARTSFLOW_SECRET_KEY")


if __name__ == "__main__":
    main()
