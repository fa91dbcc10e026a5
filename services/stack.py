"""``partsflow stack``: the production processes on this machine, without Docker.

The processes are those of ``deploy/Procfile`` (the same commands as the services of
``docker-compose.yml``), run against a local PostgreSQL and RabbitMQ: first the
databases that are missing are created and ``partsflow db upgrade`` brings every
schema up to date, then every web server and worker starts under honcho, with a
gateway in front that serves ``/inventory``, ``/shipments``, ``/tracking`` and ``/``
on one port, as nginx does in the compose stack. The gateway is nginx, with
``deploy/docker/nginx.conf``, when nginx is installed, else the small Python proxy
of :mod:`services.gateway`.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import string
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from shared.auth import UserStore
from shared.config import SERVICES, Settings, ensure_embedded_secret, load_settings

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = ROOT / "deploy" / "Procfile"
NGINX_TEMPLATE = ROOT / "deploy" / "docker" / "nginx.conf"
# The one-shot step that runs before anything else, as the compose stack's `migrate`.
RELEASE_COMMAND = "partsflow db upgrade"
DEFAULT_SERVICE = "tracking"
LOCAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
LOCAL_DB_URL = "postgresql://postgres@127.0.0.1:5432/partsflow_{service}"
GATEWAYS = ("auto", "nginx", "python")
WEB_SUFFIX = "-web"


class StackError(RuntimeError):
    """The stack cannot start; the message is one line for the operator."""


@dataclass(frozen=True)
class StackProcess:
    name: str
    command: str
    env: Mapping[str, str]


@dataclass(frozen=True)
class StackPlan:
    """Every process of the stack, with its command line and environment."""

    settings: Settings
    env: Mapping[str, str]
    processes: tuple[StackProcess, ...]
    gateway_url: str
    gateway_kind: str
    web_ports: Mapping[str, int]

    def process(self, name: str) -> StackProcess:
        return next(p for p in self.processes if p.name == name)


def read_procfile(path: Path = PROCFILE) -> dict[str, str]:
    from honcho.environ import parse_procfile

    try:
        content = path.read_text()
    except FileNotFoundError:
        raise StackError(f"no Procfile at {path}: run from a source checkout") from None
    return dict(parse_procfile(content).processes)


def local_settings(environ: Mapping[str, str]) -> Settings:
    """Settings for a workstation: the local RabbitMQ and PostgreSQL unless the
    environment names others, and a secret key kept in the data dir unless
    ``PARTSFLOW_SECRET_KEY`` is set (as ``partsflow run`` keeps its own)."""
    overrides: dict[str, str] = {}
    if not environ.get("PARTSFLOW_BROKER_URL"):
        overrides["broker_url"] = LOCAL_BROKER_URL
    for service in SERVICES:
        if not environ.get(f"PARTSFLOW_{service.upper()}_DB_URL"):
            overrides[f"{service}_db_url"] = LOCAL_DB_URL.format(service=service)
    draft = load_settings(overrides, environ=environ, embedded=True)
    secret_key = ensure_embedded_secret(draft).secret_key
    return load_settings({**overrides, "secret_key": secret_key}, environ=environ, embedded=False)


def check_servers(settings: Settings) -> None:
    """Separate processes share nothing but the broker and the databases."""
    if settings.is_memory_bus:
        raise StackError("the stack needs RabbitMQ: set PARTSFLOW_BROKER_URL to an amqp:// URL")
    for service in SERVICES:
        if make_url(settings.db_url(service)).get_backend_name() != "postgresql":
            raise StackError(
                f"the stack needs PostgreSQL: PARTSFLOW_{service.upper()}_DB_URL "
                f"is {settings.db_url(service)!r}"
            )


def exported(settings: Settings) -> dict[str, str]:
    """The settings every process of the stack is given, so that all agree."""
    env = {
        "PARTSFLOW_DATA_DIR": str(settings.data_dir),
        "PARTSFLOW_BROKER_URL": settings.broker_url,
        "PARTSFLOW_BUS_PREFIX": settings.bus_prefix,
        "PARTSFLOW_SECRET_KEY": settings.secret_key,
        "PARTSFLOW_USERS_FILE": str(settings.users_path),
    }
    for service in SERVICES:
        env[f"PARTSFLOW_{service.upper()}_DB_URL"] = settings.db_url(service)
    return env


def plan_stack(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    host: str = "127.0.0.1",
    port: int = 8080,
    web_port: int = 8001,
    gateway: str = "auto",
    procfile: Path = PROCFILE,
) -> StackPlan:
    """Lay out the processes: each web server gets its own port (consecutive from
    ``web_port``, or free ones when it is 0) and the gateway routes to them."""
    check_servers(settings)
    commands = read_procfile(procfile)
    env = {**environ, **exported(settings)}
    # Procfile commands name `partsflow`: take the one beside this Python.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    web_services = [name.removesuffix(WEB_SUFFIX) for name in commands if name.endswith(WEB_SUFFIX)]
    if sorted(web_services) != sorted(SERVICES):
        raise StackError(f"{procfile} must have a web process for each of {', '.join(SERVICES)}")
    web_ports = {
        service: web_port + index if web_port else free_port()
        for index, service in enumerate(web_services)
    }
    processes = [
        StackProcess(
            name,
            command,
            {**env, "PORT": str(web_ports[name.removesuffix(WEB_SUFFIX)])}
            if name.endswith(WEB_SUFFIX)
            else env,
        )
        for name, command in commands.items()
    ]
    kind = gateway_kind(gateway)
    upstreams = {service: f"127.0.0.1:{port_}" for service, port_ in web_ports.items()}
    # Absolute: nginx reads paths relative to its own prefix, not to this directory.
    workdir = (settings.data_dir / "stack").resolve()
    processes.append(
        StackProcess("gateway", gateway_command(kind, f"{host}:{port}", upstreams, workdir), env)
    )
    return StackPlan(
        settings=settings,
        env=env,
        processes=tuple(processes),
        gateway_url=f"http://{host}:{port}",
        gateway_kind=kind,
        web_ports=web_ports,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the gateway ---------------------------------------------------------------------------


def gateway_kind(choice: str) -> str:
    if choice not in GATEWAYS:
        raise StackError(f"the gateway is one of {', '.join(GATEWAYS)}, not {choice!r}")
    if choice == "auto":
        return "nginx" if shutil.which("nginx") else "python"
    if choice == "nginx" and not shutil.which("nginx"):
        raise StackError("nginx is not installed; use --gateway python")
    return choice


def gateway_command(kind: str, listen: str, upstreams: Mapping[str, str], workdir: Path) -> str:
    if kind == "nginx":
        config = write_nginx_config(listen, upstreams, workdir)
        return shlex.join(["nginx", "-p", str(workdir), "-c", str(config), "-e", "stderr"])
    return shlex.join(
        [
            sys.executable,
            "-m",
            "services.gateway",
            "--bind",
            listen,
            *(f"--upstream={service}={address}" for service, address in upstreams.items()),
            f"--default={DEFAULT_SERVICE}",
        ]
    )


def render_gateway_conf(listen: str, upstreams: Mapping[str, str]) -> str:
    """deploy/docker/nginx.conf with its placeholders filled in, as the nginx image
    fills them in from the environment under Docker Compose."""
    values = {f"{service.upper()}_UPSTREAM": address for service, address in upstreams.items()}
    values["GATEWAY_LISTEN"] = listen
    return string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(values)


def write_nginx_config(listen: str, upstreams: Mapping[str, str], workdir: Path) -> Path:
    """A whole nginx configuration around the gateway's http block, with every path
    nginx writes inside ``workdir``, so that it runs as any user."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.conf").write_text(render_gateway_conf(listen, upstreams))
    temp = {name: workdir / "tmp" / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    # Started by root, nginx would run its workers as nobody, who cannot write the
    # temporary files of large bodies in this data dir: they run as the caller.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    config.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {workdir / "gateway.conf"};
}}
"""
    )
    return config


# -- before the processes start ------------------------------------------------------------


def ensure_databases(settings: Settings) -> list[str]:
    """Create each service's database if it does not exist; return those created."""
    created = []
    for service in SERVICES:
        url = make_url(settings.db_url(service))
        name = url.database
        if not name:
            raise StackError(f"PARTSFLOW_{service.upper()}_DB_URL names no database")
        server = create_engine(
            url.set(drivername="postgresql+psycopg", database="postgres"),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
        )
        try:
            connection = server.connect()
        except OperationalError as error:
            server.dispose()
            raise StackError(
                f"cannot reach PostgreSQL for {service}: {str(error.orig).strip()}"
            ) from None
        try:
            with connection as conn:
                exists = conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                )
                if not exists:
                    quoted = conn.dialect.identifier_preparer.quote(name)
                    try:
                        conn.execute(text(f"CREATE DATABASE {quoted}"))
                        created.append(name)
                    except ProgrammingError as error:
                        # Another start-up made it in the meantime.
                        if getattr(error.orig, "sqlstate", None) != "42P04":
                            raise
        finally:
            server.dispose()
    return created


def run_release(plan: StackPlan) -> None:
    """``partsflow db upgrade``, to completion, before any process starts."""
    result = subprocess.run(shlex.split(RELEASE_COMMAND), env=dict(plan.env), check=False)
    if result.returncode != 0:
        raise StackError(f"`{RELEASE_COMMAND}` failed with exit status {result.returncode}")


def start_stack(
    environ: Mapping[str, str],
    *,
    host: str,
    port: int,
    web_port: int,
    gateway: str,
    say: Callable[[str], None],
) -> int:
    """What ``partsflow stack`` does. Raises :class:`StackError` or ``ConfigError``
    when it cannot start; else returns the exit status once the processes stop."""
    settings = local_settings(environ)
    plan = plan_stack(
        settings, environ=environ, host=host, port=port, web_port=web_port, gateway=gateway
    )
    created = ensure_databases(settings)
    if created:
        say(f"created the databases {', '.join(created)}")
    run_release(plan)
    say(f"Partsflow stack on {plan.gateway_url}/ ({plan.gateway_kind} gateway; Ctrl-C stops it)")
    if not UserStore(settings.users_path).names():
        say("No users yet: partsflow users add NAME --role admin --password")
    return run_processes(plan)


def run_processes(plan: StackPlan) -> int:
    """Run every process until one stops or a signal comes, then stop them all."""
    from honcho.manager import Manager

    manager = Manager()
    for process in plan.processes:
        manager.add_process(process.name, process.command, env=dict(process.env))
    manager.loop()
    return manager.returncode or 0
