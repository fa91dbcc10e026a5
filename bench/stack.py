"""A run's ground and each scenario's system.

:class:`Run` owns what lives for the whole run: a work folder, the users file, and
template databases (migrated with ``partsflow db upgrade``, inventory's seeded with
the catalogue) that each scenario copies in a fraction of a second. :class:`Stack` is
one scenario's system: its own databases, its own bus prefix, and the real processes
it starts; closing it records their peak memory, stops them, drops the databases and
deletes the queues and exchanges.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import broker
from bench.catalogue import Catalogue, seed
from bench.options import Options
from bench.processes import (
    PeakMemory,
    Process,
    answers,
    partsflow,
    run_partsflow,
    wait_for,
)
from shared.auth import UserStore
from shared.config import SERVICES, Settings, load_settings

START_TIMEOUT = 90.0


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"pfbench-{self.run_id}-"))
        self.secret = secrets.token_urlsafe(48)
        self.users_file = self.workdir / "users.json"
        store = UserStore(self.users_file)
        self.tokens = {role: store.add(f"bench-{role}", role) for role in ("service", "logistics")}
        self.catalogue = Catalogue.of_size(options.warehouses, options.parts)
        self.memory: list[dict[str, Any]] = []
        self._databases: list[str] = []
        self.templates: dict[str, str] = {}

    # -- databases ---------------------------------------------------------------------
    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.options.pg_url, autocommit=True)

    def database_url(self, name: str) -> str:
        base = self.options.pg_url.rsplit("/", 1)[0]
        return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def create_database(self, label: str, template: str | None = None) -> str:
        name = f"pfbench_{self.run_id}_{label}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{clause}')
        self._databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._databases:
            self._databases.remove(name)

    def prepare_templates(self) -> None:
        """Migrated databases for every service, inventory's with the catalogue."""
        for service in SERVICES:
            self.templates[service] = self.create_database(f"template_{service}")
        settings = self.settings(
            "template", {s: self.database_url(n) for s, n in self.templates.items()}
        )
        run_partsflow("db", "upgrade", env=self.environment(settings))
        seed(settings, self.catalogue)

    # -- settings ----------------------------------------------------------------------
    def settings(self, prefix_label: str, db_urls: dict[str, str]) -> Settings:
        return load_settings(
            {
                "data_dir": str(self.workdir),
                "users_file": str(self.users_file),
                "broker_url": self.options.amqp_url,
                "bus_prefix": f"pfbench-{self.run_id}-{prefix_label}",
                "secret_key": self.secret,
                "log_level": self.options.log_level,
                **{f"{service}_db_url": url for service, url in db_urls.items()},
            },
            environ={},
        )

    def environment(self, settings: Settings) -> dict[str, str]:
        """What an operator exports before starting a production process."""
        env = base_environment()
        env.update(
            {
                "PARTSFLOW_DATA_DIR": str(settings.data_dir),
                "PARTSFLOW_USERS_FILE": str(settings.users_path),
                "PARTSFLOW_BROKER_URL": settings.broker_url,
                "PARTSFLOW_BUS_PREFIX": settings.bus_prefix,
                "PARTSFLOW_SECRET_KEY": settings.secret_key,
                "PARTSFLOW_LOG_LEVEL": settings.log_level,
            }
        )
        for service, url in settings.db_urls.items():
            env[f"PARTSFLOW_{service.upper()}_DB_URL"] = url
        return env

    def close(self) -> None:
        for name in list(self._databases):
            with contextlib.suppress(psycopg.Error):
                self.drop_database(name)
        if not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Stack:
    """One scenario's databases (copies of the templates), bus prefix and processes."""

    def __init__(self, run: Run, scenario: str, *, bus: bool = True) -> None:
        self.run = run
        self.scenario = scenario
        self.databases = {
            service: run.create_database(f"{scenario}_{service}", run.templates[service])
            for service in SERVICES
        }
        self.settings = run.settings(
            scenario, {s: run.database_url(name) for s, name in self.databases.items()}
        )
        self.env = run.environment(self.settings)
        self.processes: list[Process] = []
        self.extra_queues: list[str] = []
        self._ports = iter(range(_port_base(), 65000))
        self._bus = bus
        if bus:
            broker.declare_topology(self.settings)

    @property
    def options(self) -> Options:
        return self.run.options

    def inventory_copy(self, label: str) -> str:
        """One more copy of the seeded inventory database (the ceiling's); its URL."""
        name = self.run.create_database(f"{self.scenario}_{label}", self.run.templates["inventory"])
        self.databases[label] = name
        return self.run.database_url(name)

    def connect(self, service: str) -> psycopg.Connection:
        """A plain connection to a service's database, to check what it holds."""
        url = self.settings.db_url(service).replace("+psycopg", "")
        return psycopg.connect(url, autocommit=True)

    def log(self, name: str) -> Path:
        return self.run.workdir / f"{self.scenario}-{name.replace(' ', '-')}.log"

    # -- processes ---------------------------------------------------------------------
    def up(self, webs: Sequence[str] = (), workers: Mapping[str, int] | None = None) -> dict:
        """Start `partsflow web` for each of ``webs`` and ``workers[service]`` processes
        of `partsflow worker` for each service, all at once; return once every web app
        is ready and every worker consumes, with each web app's port."""
        ports = {service: self._start_web(service) for service in webs}
        started = {
            service: self._start_workers(service, count)
            for service, count in (workers or {}).items()
        }
        for service, (port, process) in ports.items():
            wait_for(
                lambda port=port, service=service: answers(port, f"/{service}/readyz"),
                timeout=START_TIMEOUT,
                what=f"{service}'s web app",
                process=process,
            )
        for service, processes in started.items():
            for process in processes:
                wait_for(
                    functools.partial(self._consuming, service, len(processes)),
                    timeout=START_TIMEOUT,
                    what=f"{process.name} to consume",
                    process=process,
                )
        return {service: port for service, (port, _) in ports.items()}

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def _consuming(self, service: str, count: int) -> bool:
        """``count`` consumers take from the service's first work queue."""
        queues, _ = broker.run_names(self.settings)
        queue = next(q for q in queues if q.startswith(f"{self.settings.bus_prefix}.{service}."))
        return broker.queue_state(self.options.amqp_url, queue)[1] >= count

    def web(self, service: str) -> int:
        """`partsflow web <service>` on a free port, once ready; returns the port."""
        return self.up([service])[service]

    def workers(self, service: str, count: int = 1) -> list[Process]:
        """``count`` processes of `partsflow worker <service>`, once all consume."""
        self.up(workers={service: count})
        return self.running_workers(service)

    def running_workers(self, service: str) -> list[Process]:
        return [p for p in self.processes if p.name.startswith(f"worker {service}")]

    def _start_web(self, service: str) -> tuple[int, Process]:
        port = self.free_port()
        process = partsflow(
            f"web {service}",
            "web",
            service,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(self.options.web_workers),
            env=self.env,
            log=self.log(f"web-{service}"),
        )
        self.processes.append(process)
        return port, process

    def _start_workers(self, service: str, count: int) -> list[Process]:
        started = [
            partsflow(
                f"worker {service} #{i + 1}" if count > 1 else f"worker {service}",
                "worker",
                service,
                env=self.env,
                log=self.log(f"worker-{service}-{i + 1}"),
            )
            for i in range(count)
        ]
        self.processes.extend(started)
        return started

    def ceiling(self, database_url: str) -> int:
        """The raw ceiling under gunicorn, with the arguments `partsflow web` gives it,
        on its own copy of the database."""
        port = self.free_port()
        process = Process(
            "ceiling",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.options.web_workers),
                "--worker-class",
                "sync",
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "20",
                # Several gunicorns on one machine would share (and remove) one control
                # socket; nothing here uses it.
                "--no-control-socket",
                "bench.ceiling:create_app()",
            ],
            {**self.env, "PARTSFLOW_INVENTORY_DB_URL": database_url},
            self.log("ceiling"),
        )
        self.processes.append(process)
        wait_for(
            lambda: answers(port, "/healthz"),
            timeout=START_TIMEOUT,
            what="the ceiling app",
            process=process,
        )
        return port

    def free_port(self) -> int:
        for port in self._ports:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError("no free port")

    def stop_processes(self) -> None:
        for process in self.processes:
            self.run.memory.extend(
                {"scenario": self.scenario, **vars(peak)} for peak in _peaks(process)
            )
        for process in reversed(self.processes):
            process.stop()
        self.processes = []

    def close(self) -> None:
        try:
            self.stop_processes()
        finally:
            for name in self.databases.values():
                with contextlib.suppress(psycopg.Error):
                    self.run.drop_database(name)
            if self._bus:
                queues, exchanges = broker.run_names(self.settings)
                with contextlib.suppress(Exception):
                    broker.delete(self.options.amqp_url, [*queues, *self.extra_queues], exchanges)


def base_environment() -> dict[str, str]:
    """This process's environment without any Partsflow setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARTSFLOW_")}


def _peaks(process: Process) -> list[PeakMemory]:
    return process.peak_memory() if process.alive() else []


def _port_base() -> int:
    return 20000 + secrets.randbelow(20000)
