"""A carrier's scan sent as a command may come before tracking has heard of its
shipment (shipments' event is on another queue): the worker waits a moment for it,
and answers once it knows."""

from __future__ import annotations

import threading
import time

import pytest

from services import bootstrap
from tests.busclient import BusClient
from tests.conftest import AMQP_URL, make_settings, wait_until
from tests.integration.tracking_support import T0, event_body, shipment_data, start_tracking

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_a_scan_that_comes_before_its_shipment_is_recorded_once_it_is_known(
    postgres, rabbitmq, tmp_path
) -> None:
    settings = make_settings(
        tmp_path,
        tracking_db_url=postgres.create("tracking"),
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("news"),
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    system = start_tracking(settings)
    stop = threading.Event()
    worker = bootstrap.create_worker("tracking", settings, service=system.service)
    worker.start(stop)
    wait_until(worker.consumer.connected.is_set, timeout=20, message="the worker to consume")
    client = BusClient(AMQP_URL, settings.bus_prefix).open()
    try:
        shipment = shipment_data()
        early = client.command("tracking.record_event", event_body(shipment["id"], "picked_up", T0))
        unknown = client.command(
            "tracking.record_event", event_body("no-such-shipment", "picked_up", T0)
        )
        time.sleep(0.5)  # the shipment's news is late on purpose
        system.shipment("dispatched", shipment)
        replies = client.collect_replies(lambda r: len(r) >= 2, timeout=30)
    finally:
        client.close()
        stop.set()
        worker.join(timeout=20)
        system.service.db.dispose()
    answers = {r["correlationid"]: r for r in replies}
    assert answers[early]["type"] == "tracking.event.recorded"
    assert answers[early]["data"]["shipment_id"] == shipment["id"]
    # Never heard of within the wait: answered, not dropped.
    assert answers[unknown]["type"] == "tracking.event.rejected"
    assert answers[unknown]["data"]["reason"] == "not-found"
