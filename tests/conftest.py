"""Fixtures shared by every layer: settings, real servers, waiting for conditions.

Tests that need PostgreSQL or RabbitMQ skip with the reason when the server is
absent, unless ``PARTSFLOW_REQUIRE_SERVICES=1`` (CI), when they fail instead.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings

PG_ADMIN_URL = os.environ.get(
    "PARTSFLOW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("PARTSFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
SECRET = "test-secret-key-" + "x" * 32
REQUIRE_SERVICES = os.environ.get("PARTSFLOW_REQUIRE_SERVICES") == "1"


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _need(server: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{server} is not reachable at {host}:{port} (PARTSFLOW_REQUIRE_SERVICES=1)")
    pytest.skip(f"{server} is not reachable at {host}:{port}")


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


# -- PostgreSQL ------------------------------------------------------------------------


class PostgresDatabases:
    """Creates throwaway databases and drops them at the end of the session."""

    def __init__(self, admin_url: str, run_id: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.admin_url = admin_url
        self.run_id = run_id
        self.created: list[str] = []

    def create(self, label: str) -> str:
        name = f"pf_{self.run_id}_{label}_{len(self.created)}"
        with self.psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def drop_all(self) -> None:
        with self.psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres(run_id: str) -> Iterator[PostgresDatabases]:
    _need("PostgreSQL", "127.0.0.1", 5432)
    databases = PostgresDatabases(PG_ADMIN_URL, run_id)
    yield databases
    databases.drop_all()


# -- RabbitMQ --------------------------------------------------------------------------


class RabbitPrefixes:
    """Hands out bus prefixes and deletes their queues and exchanges at the end."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self.topologies: list[Any] = []

    def prefix(self, label: str = "t") -> str:
        return f"pft-{self.run_id}-{label}-{uuid.uuid4().hex[:6]}"

    def track(self, topology: Any) -> None:
        self.topologies.append(topology)

    def cleanup(self) -> None:
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            channel = conn.channel()
            for topology in self.topologies:
                for name in topology.all_queue_names():
                    try:
                        channel.queue_delete(name)
                    except Exception:
                        channel = conn.channel()
                for name in (
                    topology.exchange_name("event"),
                    topology.exchange_name("command"),
                    topology.dead_letter_exchange_name,
                ):
                    try:
                        channel.exchange_delete(name)
                    except Exception:
                        channel = conn.channel()


def _need_amqp_handshake(url: str) -> None:
    """A broker that takes TCP connections may still not answer AMQP (its sockets used
    up, or wedged): say so once, rather than as a timeout in every test."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=10) as conn:
            conn.connect()
    except Exception as exc:
        problem = f"RabbitMQ takes connections but does not answer AMQP: {exc!r}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{problem} (PARTSFLOW_REQUIRE_SERVICES=1)")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def rabbitmq(run_id: str) -> Iterator[RabbitPrefixes]:
    _need("RabbitMQ", "127.0.0.1", 5672)
    _need_amqp_handshake(AMQP_URL)
    prefixes = RabbitPrefixes(AMQP_URL, run_id)
    yield prefixes
    prefixes.cleanup()


# -- settings --------------------------------------------------------------------------


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "secret_key": SECRET,
        "bus_prefix": f"pft-{uuid.uuid4().hex[:8]}",
        "relay_idle_seconds": 0.05,
        "retry_backoff_seconds": 0.05,
        "max_retry_backoff_seconds": 0.5,
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings(values, environ={}, embedded=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite files in a temporary folder and the in-process bus."""
    return make_settings(tmp_path)
