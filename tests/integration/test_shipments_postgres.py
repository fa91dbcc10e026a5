"""The reservation-to-delivery chain in the production shape: three PostgreSQL
databases, RabbitMQ, a worker per service."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.integration.test_shipments_flow import assert_books_balance, hand_carry
from tests.support import reservation_body, seed_catalogue

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]
INV = "/inventory/api/v1"
SHP = "/shipments/api/v1/shipments"


def test_reserve_plan_dispatch_deliver_over_the_real_bus(distributed) -> None:
    api = distributed.api("logistics")
    seed_catalogue(api)
    assert (
        api.post(
            f"{INV}/receipts",
            {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 1, "serials": ["X-1"]},
        ).status
        == 201
    )
    reply = api.post(
        f"{INV}/reservations",
        reservation_body(warehouse="CDU"),
        headers={"X-Correlation-ID": "field-service-req-7"},
    )
    assert reply.status == 201
    reservation = reply.body
    [shipment] = api.wait_for(
        SHP, lambda body: len(body) == 1, timeout=30, reservation_id=reservation["id"]
    )
    assert shipment["status"] == "planned"
    dispatched = api.post(
        f"{SHP}/{shipment['id']}/dispatch", hand_carry(), headers={"X-Correlation-ID": "fs-go-7"}
    )
    assert dispatched.status == 200
    api.wait_for(
        f"{INV}/reservations/{reservation['id']}", lambda r: r["status"] == "issued", timeout=30
    )
    assert api.get(f"{INV}/units/X-1").body["status"] == "in_transit"
    delivered = api.post(
        f"{SHP}/{shipment['id']}/deliver", {}, headers={"X-Correlation-ID": "fs-done-7"}
    )
    assert delivered.status == 200
    api.wait_for(
        f"{INV}/reservations/{reservation['id']}",
        lambda r: r["status"] == "fulfilled",
        timeout=30,
    )
    assert api.get(f"{INV}/units/X-1").body["status"] == "at_site"
    assert_books_balance(distributed)

    # Over the real bus too, each event carries the request that caused it.
    caused_by = {}
    for name in ("inventory", "shipments"):
        db = distributed.service(name).db
        with db.reading() as session:
            for body in session.scalars(select(db.bus.outbox.c.body)):
                envelope = json.loads(body)
                if envelope.get("subject") in (reservation["id"], shipment["id"]):
                    caused_by[envelope["type"]] = envelope["correlationid"]
    assert caused_by == {
        "inventory.reservation.confirmed": "field-service-req-7",
        "shipments.shipment.planned": "field-service-req-7",
        "shipments.shipment.dispatched": "fs-go-7",
        "inventory.reservation.issued": "fs-go-7",
        "shipments.shipment.delivered": "fs-done-7",
        "inventory.reservation.fulfilled": "fs-done-7",
    }


def test_readiness_covers_database_and_broker(distributed) -> None:
    api = distributed.api()
    for service in ("inventory", "shipments", "tracking"):
        reply = api.get(f"/{service}/readyz")
        assert reply.status == 200, reply
        assert reply.body["checks"] == {"database": "ok", "broker": "ok"}
