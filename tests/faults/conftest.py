"""The fault suite's ground: private servers (started once per session), and per test a
fresh inventory database, a fresh bus prefix, the downstream watcher, and the means to
run workers in threads or as real processes.

Nothing here touches the machine's shared PostgreSQL or RabbitMQ: faults are injected
only into the private ones. The suite runs serially; each test is bounded in time.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue
from sqlalchemy import func, select

import services.inventory as inventory_pkg
from services import bootstrap
from services.inventory.service import Inventory
from shared.config import Settings
from shared.worker import Worker
from tests.busclient import BusClient
from tests.conftest import REQUIRE_SERVICES, make_settings, wait_until
from tests.faults import watcher as watcher_mod
from tests.faults.checker import (
    History,
    assert_exactly_once,
    assert_ledger_balances,
    reservations_per_job,
)
from tests.faults.servers import BlackholeProxy, PrivatePostgres, PrivateRabbit, ServerUnavailable
from tests.processes import Process, environment, partsflow
from tests.support import ApiClient, make_tokens, reservation_body, seed_catalogue

CONFIRMED = "inventory.reservation.confirmed"


def reserve_command(job_id: str, part: str = "GEL-250") -> dict[str, Any]:
    """A reservation at CDU, as the HTTP body or the ``inventory.reserve`` data."""
    return reservation_body(job_id=job_id, part_number=part, warehouse="CDU")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault injection on private servers; runs serially, one at a time"
    )
    config.addinivalue_line("markers", "xdist_group(name): keep these tests on one worker")


CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Remember whether the test itself passed: only then is the ledger checked after
    it (a failed test's ledger would only repeat its failure)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_PASSED] = report.passed
    return report


# -- the private servers -------------------------------------------------------------------


@dataclass
class Servers:
    rabbit: PrivateRabbit
    postgres: PrivatePostgres


@pytest.fixture(scope="package")
def servers() -> Iterator[Servers]:
    """Started once for the fault suite and stopped when it ends, so that two brokers
    and two database servers do not share the machine with the tests after it."""
    base = Path(tempfile.mkdtemp(prefix="pf-faults-"))
    base.chmod(0o711)  # the PostgreSQL cluster may belong to another user
    (base / "pg").mkdir()
    rabbit = postgres = None
    try:
        try:
            postgres = PrivatePostgres(base / "pg")
            rabbit = PrivateRabbit(base / "rabbit")
        except ServerUnavailable as exc:
            message = f"the fault suite needs private servers: {exc}"
            if REQUIRE_SERVICES:
                pytest.fail(f"{message} (PARTSFLOW_REQUIRE_SERVICES=1)")
            pytest.skip(message)
        yield Servers(rabbit, postgres)
    finally:
        if rabbit is not None:
            rabbit.stop()
        if postgres is not None:
            with contextlib.suppress(ServerUnavailable):
                postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- one test's system -----------------------------------------------------------------------


@dataclass
class Lab:
    """Inventory (its HTTP app, its service) and the downstream watcher, on the private
    servers, with a bus prefix of their own."""

    servers: Servers
    settings: Settings
    inventory: Inventory
    app: Any
    tokens: dict[str, str]
    watcher: watcher_mod.Watcher
    tmp_path: Path
    stop: threading.Event = field(default_factory=threading.Event)
    workers: list[Worker] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    proxies: list[BlackholeProxy] = field(default_factory=list)

    @property
    def rabbit(self) -> PrivateRabbit:
        return self.servers.rabbit

    @property
    def postgres(self) -> PrivatePostgres:
        return self.servers.postgres

    @property
    def prefix(self) -> str:
        return self.settings.bus_prefix

    def api(self, role: str = "admin") -> ApiClient:
        return ApiClient(self.app.test_client(), self.tokens[role])

    def queue(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    # -- workers --------------------------------------------------------------------------
    def inventory_worker(self, *, broker_url: str | None = None, threads: int = 1) -> Worker:
        """Inventory's relay and consumer on threads of this process."""
        settings = self.settings.with_overrides(broker_url=broker_url or self.settings.broker_url)
        worker = bootstrap.create_worker(
            "inventory", settings, service=self.inventory, consumer_threads=threads
        )
        return self._start(worker)

    def watcher_worker(self, *, threads: int = 1) -> Worker:
        return self._start(
            watcher_mod.create_worker(self.settings, self.watcher, consumer_threads=threads)
        )

    def _start(self, worker: Worker) -> Worker:
        worker.start(self.stop)
        self.workers.append(worker)
        wait_until(
            worker.consumer.connected.is_set, timeout=30, message=f"{worker.service} consumer"
        )
        return worker

    def spawn_inventory_worker(
        self, name: str, *, broker_url: str | None = None, bus_prefix: str | None = None
    ) -> Process:
        """``partsflow worker inventory`` as a real process (so that it can be SIGKILLed)."""
        settings = self.settings.with_overrides(
            broker_url=broker_url or self.settings.broker_url,
            bus_prefix=bus_prefix or self.settings.bus_prefix,
        )
        env = environment(
            settings,
            PARTSFLOW_CONFIRM_TIMEOUT=str(settings.confirm_timeout),
            PARTSFLOW_CONSUMER_PREFETCH=str(settings.consumer_prefetch),
        )
        process = partsflow("worker", "inventory", env=env, log=self.tmp_path / f"{name}.log")
        self.processes.append(process)
        return process

    def proxy(self) -> BlackholeProxy:
        proxy = BlackholeProxy(self.rabbit.port)
        self.proxies.append(proxy)
        return proxy

    def wait_for_consumers(self, queue: str, count: int, timeout: float = 45) -> None:
        name = self.queue(queue)
        wait_until(
            lambda: self.rabbit.queues().get(name, {}).get("consumers") == count,
            timeout=timeout,
            interval=0.3,
            message=f"{count} consumer(s) on {name}",
        )

    # -- the bus, as another system uses it ------------------------------------------------
    def bus_client(self) -> BusClient:
        return BusClient(self.settings.broker_url, self.prefix).open()

    def drain(self, queue: str) -> list[Any]:
        """Take every message now in one of this test's queues (say a ``.dead`` one)."""
        taken = []
        with Connection(self.settings.broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            bound = Queue(self.queue(queue), no_declare=True)(channel)
            while (message := bound.get(no_ack=True)) is not None:
                taken.append(message)
        return taken

    # -- state -------------------------------------------------------------------------------
    def unsent(self) -> int:
        outbox = self.inventory.db.bus.outbox
        with self.inventory.db.reading() as session:
            return session.scalar(select(func.count()).where(outbox.c.sent_at.is_(None))) or 0

    def wait_outbox_drained(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.unsent() == 0, timeout=timeout, interval=0.2, message="the outbox to drain"
        )

    def receive(self, part: str, warehouse: str, quantity: int) -> None:
        body: dict[str, Any] = {"warehouse": warehouse, "part_number": part, "quantity": quantity}
        if part == "XRT-2000":
            body["serials"] = [f"{warehouse}-{uuid.uuid4().hex[:10]}" for _ in range(quantity)]
        reply = self.api().post("/inventory/api/v1/receipts", body)
        assert reply.status == 201, reply

    # -- what must hold --------------------------------------------------------------------
    def settle(self, missing: Callable[[], set[str]], where: str, timeout: float = 90) -> None:
        """Wait until ``missing()`` is empty; else fail naming what is missing and
        where the bus stands."""
        deadline = time.monotonic() + timeout
        while (left := missing()) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not left, (
            f"{len(left)} acknowledged jobs never {where}, e.g. {sorted(left)[:5]}; "
            f"queues {self.rabbit.queues()}; unsent outbox rows {self.unsent()}"
        )

    def settle_in_inventory(self, history: History, prefix: str) -> None:
        self.settle(
            lambda: history.acknowledged_keys - set(reservations_per_job(self.inventory, prefix)),
            "reserved in inventory",
        )

    def settle_downstream(self, history: History) -> None:
        self.settle(
            lambda: history.acknowledged_keys - set(self.watcher.effects_per_job(CONFIRMED)),
            "applied downstream",
        )

    def assert_every_job_once(self, history: History, prefix: str) -> None:
        """Each submitted job has exactly one reservation in inventory and exactly one
        ``confirmed`` event applied downstream; nothing else appeared; the outbox is
        empty."""
        self.settle_in_inventory(history, prefix)
        reserved = reservations_per_job(self.inventory, prefix)
        assert_exactly_once(history, reserved, "reservations in inventory")
        self.settle_downstream(history)
        self.wait_outbox_drained()
        applied = {
            job: n
            for job, n in self.watcher.effects_per_job(CONFIRMED).items()
            if job.startswith(prefix)
        }
        assert_exactly_once(history, applied, "confirmed events applied downstream")

    def assert_nothing_dead(self) -> None:
        queues = self.rabbit.queues()
        for name in ("inventory.dead", "watcher.dead"):
            assert queues[self.queue(name)]["ready"] == 0, queues

    def close(self) -> None:
        self.stop.set()
        for process in self.processes:
            process.kill()
            process.stop()
        for worker in self.workers:
            worker.join(timeout=30)
        for proxy in self.proxies:
            proxy.close()
        self.watcher.db.dispose()
        self.inventory.db.dispose()


@pytest.fixture
def lab(servers: Servers, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    servers.rabbit.ensure_running()
    servers.postgres.ensure_running()
    settings = make_settings(
        tmp_path,
        inventory_db_url=servers.postgres.create_database("inventory"),
        broker_url=servers.rabbit.url,
        bus_prefix=f"pff-{uuid.uuid4().hex[:8]}",
        delivery_limit=3,
        confirm_timeout=2.0,
    )
    inventory_pkg.upgrade_database(settings)
    inventory = inventory_pkg.open_service(settings)
    app = inventory_pkg.create_app(settings=settings, service=inventory)
    watcher = watcher_mod.open_watcher(settings, servers.postgres.create_database("watcher"))
    # Every queue exists before the first event is published, so none goes unrouted.
    with Connection(settings.broker_url, connect_timeout=5) as conn:
        bootstrap.bus_topology(settings).declare(conn)
        watcher_mod.topology(settings).declare(conn)
    system = Lab(servers, settings, inventory, app, make_tokens(settings), watcher, tmp_path)
    try:
        seed_catalogue(system.api())
        yield system
        servers.rabbit.ensure_running()
        servers.postgres.ensure_running()
        if request.node.stash.get(CALL_PASSED, False):
            assert_ledger_balances(inventory)
    finally:
        system.close()


# -- traffic -----------------------------------------------------------------------------------


class CommandPublisher:
    """Sends commands as a field-service system would: each one until the broker
    confirms it, reconnecting after a fault, always with the same id, so that a repeat
    is harmless. Records each id in ``history``: acknowledged once confirmed,
    indeterminate while a try ended without an answer."""

    def __init__(self, url: str, prefix: str, history: History, *, deadline: float = 90) -> None:
        self.url = url
        self.prefix = prefix
        self.history = history
        self.deadline = deadline
        self.client: BusClient | None = None
        self.failures = 0

    def send(self, type: str, data: dict[str, Any], message_id: str) -> None:
        give_up = time.monotonic() + self.deadline
        while True:
            try:
                if self.client is None:
                    client = BusClient(self.url, self.prefix)
                    client.connection.ensure_connection(max_retries=1)
                    self.client = client
                self.client.command(type, data, message_id=message_id, reply=False)
                self.history.acknowledged(message_id)
                return
            except Exception:
                self.history.indeterminate(message_id)
                self.failures += 1
                self._drop()
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.2)

    def _drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.connection.collect()
            self.client = None

    def close(self) -> None:
        self._drop()


def reserve_over_http(
    lab: Lab, bodies: list[dict[str, Any]], history: History, *, threads: int = 4
) -> Counter[int]:
    """POST each reservation (``job_id`` is its business id) from a few threads, with
    an Idempotency-Key, as a client that may retry would."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def post(body: dict[str, Any]) -> None:
        reply = lab.api("service").post(
            "/inventory/api/v1/reservations", body, headers={"Idempotency-Key": body["job_id"]}
        )
        with lock:
            statuses[reply.status] += 1
        if reply.status == 201:
            history.acknowledged(body["job_id"])
        else:
            history.indeterminate(body["job_id"])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))
    return statuses
