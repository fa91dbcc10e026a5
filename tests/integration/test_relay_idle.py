"""An idle relay keeps its broker connection: the broker's heartbeats are read while
nothing is published, so a quiet night does not end in a dropped connection."""

from __future__ import annotations

import threading
import time

import pytest

from services import bootstrap
from shared.bus import connection as bus_connection
from shared.bus.relay import OutboxRelay
from tests.conftest import AMQP_URL, make_settings, wait_until
from tests.integration.conftest import start_inventory

pytestmark = [pytest.mark.rabbitmq]


def test_an_idle_relay_keeps_its_connection(
    rabbitmq, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One-second heartbeats: a connection whose heartbeats go unread is dropped in ~3 s.
    monkeypatch.setattr(bus_connection, "HEARTBEAT_SECONDS", 1)
    settings = make_settings(
        tmp_path,
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("idle"),
        relay_idle_seconds=30.0,
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    system = start_inventory(settings)
    relay = OutboxRelay(system.service.db, settings, bootstrap.bus_topology(settings))
    stop = threading.Event()
    running = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    system.service.create_warehouse(
        {"code": "CDU", "name": "Chengdu", "region": "sichuan", "kind": "depot"}
    )
    running.start()
    try:
        wait_until(lambda: relay.published_total >= 1, timeout=20, message="the first event")
        time.sleep(8)  # idle for eight heartbeat intervals
        system.service.create_warehouse(
            {"code": "SHA", "name": "Shanghai", "region": "east-china", "kind": "central"}
        )
        wait_until(lambda: relay.published_total >= 2, timeout=20, message="the second event")
    finally:
        stop.set()
        running.join(timeout=10)
    assert relay.reconnects == 0
