"""A replacement reservation names the reservation it replaces: one that exists and
did not arrive (a loss reported just after the delivery must not take a second unit)."""

from __future__ import annotations

import pytest

from tests.integration.test_shipments_flow import INV, SHP, hand_carry, planned_shipment
from tests.support import ApiClient, reservation_body, seed_catalogue


@pytest.fixture
def api(embedded) -> ApiClient:
    client = embedded.api("logistics")
    seed_catalogue(client)
    reply = client.post(
        f"{INV}/receipts",
        {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 2, "serials": ["C-1", "C-2"]},
    )
    assert reply.status == 201
    return client


def replacement_of(reservation_id: str) -> dict:
    return reservation_body(
        job_id="JOB-1042", warehouse="CDU", priority="machine_down", replaces=reservation_id
    )


def test_a_delivered_reservation_is_not_replaced(api: ApiClient) -> None:
    reply = api.post(f"{INV}/reservations", reservation_body(job_id="JOB-1042", warehouse="CDU"))
    reservation = reply.body
    shipment = planned_shipment(api, reservation["id"])
    assert api.post(f"{SHP}/{shipment['id']}/dispatch", hand_carry()).status == 200
    assert api.post(f"{SHP}/{shipment['id']}/deliver", {}).status == 200
    api.wait_for(f"{INV}/reservations/{reservation['id']}", lambda r: r["status"] == "fulfilled")

    reply = api.post(f"{INV}/reservations", replacement_of(reservation["id"]))

    assert reply.status == 409, reply
    assert reply.body["current_status"] == "fulfilled"
    assert api.get(f"{INV}/stock", part_number="XRT-2000").body[0]["reserved"] == 0
    assert len(api.get(f"{INV}/reservations", job_id="JOB-1042").body) == 1


def test_a_replacement_names_a_reservation_that_exists(api: ApiClient) -> None:
    reply = api.post(f"{INV}/reservations", replacement_of("no-such-reservation"))
    assert reply.status == 422, reply
    assert "replaces" in reply.body["errors"]
    assert api.get(f"{INV}/reservations").body == []


def test_a_reservation_on_its_way_can_be_replaced(api: ApiClient) -> None:
    reservation = api.post(
        f"{INV}/reservations", reservation_body(job_id="JOB-1042", warehouse="CDU")
    ).body
    shipment = planned_shipment(api, reservation["id"])
    assert api.post(f"{SHP}/{shipment['id']}/dispatch", hand_carry()).status == 200

    reply = api.post(f"{INV}/reservations", replacement_of(reservation["id"]))

    assert reply.status == 201, reply
    assert reply.body["replaces"] == reservation["id"]
