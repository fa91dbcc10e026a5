"""A worker answers its own probes and shows what it has done, for Compose and
Kubernetes to watch."""

from __future__ import annotations

import threading

import psycopg
import pytest
import requests

from services import bootstrap
from tests.busclient import BusClient
from tests.conftest import AMQP_URL, PG_ADMIN_URL, make_settings, wait_until
from tests.integration.conftest import start_inventory
from tests.processes import free_port
from tests.support import reservation_body, seed_catalogue

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_worker_probes_and_metrics(postgres, rabbitmq, tmp_path) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        inventory_db_url=postgres.create("inventory"),
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("probe"),
        worker_port=port,
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    system = start_inventory(settings)
    seed_catalogue(system.api())
    system.api().post(
        "/inventory/api/v1/receipts",
        {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 5},
    )
    stop = threading.Event()
    worker = bootstrap.create_worker("inventory", settings, service=system.service)
    worker.start(stop)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=2).status_code == 200,
            timeout=20,
            message="the worker to be ready",
        )
        assert requests.get(f"{base}/healthz", timeout=2).json() == {
            "status": "ok",
            "service": "inventory",
        }
        client = BusClient(AMQP_URL, settings.bus_prefix).open()
        try:
            client.command("inventory.reserve", reservation_body(part_number="GEL-250"))
            client.collect_replies(lambda r: len(r) >= 1, timeout=20)
        finally:
            client.close()
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'partsflow_worker_messages_applied_total{service="inventory"} 1.0' in metrics
        assert f'partsflow_queue_messages{{queue="{settings.bus_prefix}.inventory.dead"}}' in (
            metrics
        )
        assert "partsflow_outbox_unsent" in metrics
        assert requests.get(f"{base}/readyz", timeout=2).json()["checks"] == {
            "threads": "ok",
            "broker": "ok",
            "database": "ok",
        }

        # Without its database the worker can apply nothing: not ready, and it says why.
        database = settings.db_url("inventory").rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 503,
            timeout=20,
            message="the worker to say it is not ready",
        )
        checks = requests.get(f"{base}/readyz", timeout=5).json()["checks"]
        assert checks["database"].startswith("unreachable")
        assert checks["broker"] == "ok"
    finally:
        stop.set()
        worker.join(timeout=20)
        system.service.db.dispose()
