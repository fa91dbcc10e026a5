from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import services.inventory as inventory_pkg
from services.inventory.service import Inventory
from shared.config import Settings
from tests.support import ApiClient, make_tokens


@dataclass
class InventoryUnderTest:
    settings: Settings
    service: Inventory
    app: Any
    tokens: dict[str, str]

    def api(self, role: str = "admin") -> ApiClient:
        return ApiClient(self.app.test_client(), self.tokens.get(role))


def start_inventory(settings: Settings) -> InventoryUnderTest:
    inventory_pkg.upgrade_database(settings)
    service = inventory_pkg.open_service(settings)
    app = inventory_pkg.create_app(settings=settings, service=service)
    return InventoryUnderTest(settings, service, app, make_tokens(settings))


@pytest.fixture
def inventory(settings: Settings) -> Iterator[InventoryUnderTest]:
    system = start_inventory(settings)
    yield system
    system.service.db.dispose()


@dataclass
class RunningSystem:
    """All three services with their workers, as `partsflow run` wires them."""

    system: Any
    tokens: dict[str, str]

    def api(self, role: str = "logistics") -> ApiClient:
        from werkzeug.test import Client

        return ApiClient(Client(self.system.wsgi), self.tokens.get(role))

    def service(self, name: str) -> Any:
        return self.system.services[name]


@pytest.fixture
def embedded(settings: Settings) -> Iterator[RunningSystem]:
    from services.embedded import EmbeddedSystem

    system = EmbeddedSystem(settings)
    running = RunningSystem(system, make_tokens(system.settings))
    system.start_background()
    yield running
    system.close()


@dataclass
class DistributedSystem:
    """Each service with its own PostgreSQL database and worker, on RabbitMQ: the
    production shape, in one test process (web apps through test clients)."""

    settings: Settings
    services: dict[str, Any]
    apps: dict[str, Any]
    workers: dict[str, Any]
    tokens: dict[str, str]

    def api(self, role: str = "logistics") -> ApiClient:
        from werkzeug.test import Client

        from services.embedded import PrefixDispatcher

        wsgi = PrefixDispatcher(dict(self.apps), default=self.apps["tracking"])
        return ApiClient(Client(wsgi), self.tokens.get(role))

    def service(self, name: str) -> Any:
        return self.services[name]


@pytest.fixture
def distributed(postgres, rabbitmq, tmp_path) -> Iterator[DistributedSystem]:
    import threading

    from services import bootstrap
    from tests.conftest import AMQP_URL, make_settings, wait_until

    settings = make_settings(
        tmp_path,
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("sys"),
        **{f"{name}_db_url": postgres.create(name) for name in bootstrap.SERVICES},
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    bootstrap.upgrade_databases(settings)
    services = {name: bootstrap.open_service(name, settings) for name in bootstrap.SERVICES}
    apps = {
        name: module.create_app(settings=settings, service=services[name])
        for name, module in bootstrap.SERVICES.items()
    }
    stop = threading.Event()
    workers = {
        name: bootstrap.create_worker(name, settings, service=services[name])
        for name in bootstrap.SERVICES
    }
    for worker in workers.values():
        worker.start(stop)
    for worker in workers.values():
        if worker.routes:
            wait_until(worker.consumer.connected.is_set, timeout=20, message="consumers")
    yield DistributedSystem(settings, services, apps, workers, make_tokens(settings))
    stop.set()
    for worker in workers.values():
        worker.join(timeout=20)
    for service in services.values():
        service.db.dispose()
