"""The ``partsflow`` command."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError

from services import bootstrap
from services.stack import GATEWAYS, StackError, start_stack
from shared.auth import ROLES, UserError, UserExists, UserStore
from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging

SERVICE_NAMES = click.Choice(list(bootstrap.SERVICES))
# A port to listen on. Port 0 would have the system pick one nobody is told of.
PORT = click.IntRange(1, 65535)
T = TypeVar("T")


@contextmanager
def _configured() -> Iterator[None]:
    """A setting that is wrong, or names what cannot be used, stops the command with
    one line that names it."""
    try:
        yield
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None


def _settings(embedded: bool = False, **overrides: Any) -> Settings:
    with _configured():
        return load_settings(overrides, embedded=embedded)


@click.group()
def main() -> None:
    """Partsflow: spare parts for medical-imaging field service."""


@main.command()
@click.option("--demo", is_flag=True, help="Load demo warehouses, parts, stock and users.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=PORT)
def run(demo: bool, host: str, port: int) -> None:
    """Run the whole system in one process (SQLite, in-process bus)."""
    from services.embedded import EmbeddedSystem

    settings = _settings(embedded=True)
    configure_logging(settings.log_level, settings.log_format)
    with _configured():
        system = EmbeddedSystem(settings)
    try:
        server = system.listen(host, port)
    except OSError as error:
        system.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {error.strerror or error}; choose another with --port"
        ) from None
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
        system.serve(server)
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
    # 0 is a choice here: no probes at all.
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /healthz, /readyz and /metrics here (default PARTSFLOW_WORKER_PORT, 0: none).",
)
def worker(service: str, threads: int | None, port: int | None) -> None:
    """Run a service's relay, consumer and scheduler (production)."""
    settings = _settings() if port is None else _settings(worker_port=port)
    configure_logging(settings.log_level, settings.log_format)
    status = bootstrap.create_worker(service, settings, consumer_threads=threads).run_forever()
    sys.exit(status)


def _bind_address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """gunicorn's --bind, HOST:PORT, checked here: gunicorn would answer a port out of
    range with a traceback. Port 0 is a choice (gunicorn says which port it took); a
    unix socket or file descriptor passes as it is."""
    if value.startswith(("unix:", "fd://")) or value.endswith("]"):
        return value
    _, colon, port = value.rpartition(":")
    if colon and not (port.isdigit() and int(port) <= 65535):
        raise click.BadParameter(f"the port in {value!r} must be a number from 0 to 65535")
    return value


@main.command()
@click.argument("service", type=SERVICE_NAMES)
@click.option("--bind", default="127.0.0.1:8001", show_default=True, callback=_bind_address)
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
            "--graceful-timeout",
            "20",
            # No access log here: the app writes one line per request itself, with its
            # request id, user and time taken.
            # Several gunicorns on one machine would share (and remove) one control
            # socket; nothing here uses it.
            "--no-control-socket",
            f"services.{service}:create_app()",
        ],
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the gateway listens.")
@click.option("--port", default=8080, show_default=True, type=PORT, help="The gateway's port.")
@click.option(
    "--web-port",
    default=8001,
    show_default=True,
    # 0 is a choice here (any free ports); the last of the three must still be a port.
    type=click.IntRange(0, 65535 - len(bootstrap.SERVICES) + 1),
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
    settings = _administrative_settings()
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
    """Create a user and print a new API token (the last line of output). A user that
    exists with this role gets another token; with another role it is refused, and its
    role, password and tokens stay as they are."""
    settings = _administrative_settings()
    store = UserStore(settings.users_path)
    existing = store.get(name)
    if existing is not None and existing.role != role:
        # Before asking for a password that would not be used.
        raise click.ClickException(str(UserExists(existing)))
    password = _read_password() if ask_password else None
    token = _change_users(lambda store: store.add(name, role, password))
    click.echo(f"user {name} ({role}) saved in {settings.users_path}; API token:", err=True)
    click.echo(token)


@users.command("sign-out")
@click.argument("name")
def users_sign_out(name: str) -> None:
    """End every page session of a user, in every browser and service (its API tokens
    stay valid). Signing out in a browser ends that browser's session only."""
    _change_users(lambda store: store.end_sessions(name))
    click.echo(f"user {name} is signed out everywhere", err=True)


@users.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Remove a user: its API tokens, password and page sessions end at once."""
    _change_users(lambda store: store.remove(name))
    click.echo(f"user {name} removed", err=True)


def _change_users(change: Callable[[UserStore], T]) -> T:
    settings = _administrative_settings()
    try:
        return change(UserStore(settings.users_path))
    except UserError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(
            f"cannot write the users file {settings.users_path} (PARTSFLOW_USERS_FILE, "
            f"by default in PARTSFLOW_DATA_DIR): {error.strerror or error}"
        ) from None


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password again: ")
    else:
        # A file written on Windows ends its lines with \r\n: neither is the password's.
        first = sys.stdin.readline().rstrip("\r\n")
        second = sys.stdin.readline().rstrip("\r\n")
    if first != second:
        raise click.ClickException("the two passwords differ")
    return first


def _administrative_settings() -> Settings:
    """Administrative commands use no secret key, so they never refuse one: a key
    `partsflow run` takes (any, in the embedded mode) must not stop `users add`."""
    return _settings(embedded=True)


if __name__ == "__main__":
    main()
