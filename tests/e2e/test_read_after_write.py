"""The embedded system answers a write once every service has applied what it caused:
whoever reads right after, in any service, sees it, with no waiting or polling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from services.embedded import EmbeddedSystem
from tests.conftest import make_settings
from tests.support import ApiClient, make_tokens, reservation_body, seed_catalogue

INV = "/inventory/api/v1"
SHP = "/shipments/api/v1/shipments"
TRK = "/tracking/api/v1"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiClient]:
    system = EmbeddedSystem(make_settings(tmp_path, relay_idle_seconds=1.0))
    tokens = make_tokens(system.settings)
    system.start_background()
    try:
        yield ApiClient(Client(system.wsgi), tokens["admin"])
    finally:
        system.close()


def test_every_service_shows_a_write_in_the_next_read(api: ApiClient) -> None:
    seed_catalogue(api)
    assert (
        api.post(
            f"{INV}/receipts",
            {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 20},
        ).status
        == 201
    )
    for n in range(5):
        job_id = f"JOB-RAW-{n}"
        reservation = api.post(
            f"{INV}/reservations",
            reservation_body(job_id=job_id, part_number="GEL-250", warehouse="CDU"),
        )
        assert reservation.status == 201, reservation
        reservation_id = reservation.body["id"]

        [shipment] = api.get(SHP, reservation_id=reservation_id).body
        assert shipment["status"] == "planned"
        job = api.get(f"{TRK}/jobs/{job_id}").body
        assert [p["shipment_id"] for p in job["parts"]] == [shipment["id"]]

        dispatched = api.post(
            f"{SHP}/{shipment['id']}/dispatch",
            {"carrier": "SF Express", "tracking_number": f"SF-RAW-{n}"},
        )
        assert dispatched.status == 200, dispatched
        assert api.get(f"{TRK}/shipments/{shipment['id']}/eta").body["status"] == "in_transit"
        assert api.get(f"{INV}/reservations/{reservation_id}").body["status"] == "issued"

        delivered = api.post(f"{SHP}/{shipment['id']}/deliver", {"received_by": "ward"})
        assert delivered.status == 200, delivered
        assert api.get(f"{INV}/reservations/{reservation_id}").body["status"] == "fulfilled"
        assert api.get(f"{TRK}/jobs/{job_id}").body["parts"][0]["risk"] in (
            "delivered",
            "delivered_late",
        )


def test_a_lost_part_shows_its_replacement_in_the_next_read(api: ApiClient) -> None:
    """The replacement is reserved by a command tracking sends, whose results carry
    the command's id: they are waited for too."""
    seed_catalogue(api)
    receipt = {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 2}
    assert api.post(f"{INV}/receipts", receipt).status == 201
    body = reservation_body(job_id="JOB-RAW-LOST", part_number="GEL-250", priority="urgent")
    lost_id = api.post(f"{INV}/reservations", body).body["id"]
    [shipment] = api.get(SHP, reservation_id=lost_id).body
    dispatch = {"carrier": "SF Express", "tracking_number": "SF-RAW-LOST"}
    assert api.post(f"{SHP}/{shipment['id']}/dispatch", dispatch).status == 200

    event = {
        "shipment_id": shipment["id"],
        "kind": "lost",
        "occurred_at": "2026-11-20T06:00:00+00:00",
        "note": "parcel missing at the hub",
    }
    assert api.post(f"{TRK}/events", event).status == 201

    reservations = api.get(f"{INV}/reservations", job_id="JOB-RAW-LOST").body
    [replacement] = [r for r in reservations if r["id"] != lost_id]
    assert replacement["replaces"] == lost_id
    assert replacement["status"] == "confirmed"
    [planned] = api.get(SHP, reservation_id=replacement["id"]).body
    assert planned["status"] == "planned"
    statuses = {
        p["reservation_id"]: p["reservation_status"]
        for p in api.get(f"{TRK}/jobs/JOB-RAW-LOST").body["parts"]
    }
    assert statuses == {lost_id: "lost", replacement["id"]: "confirmed"}
