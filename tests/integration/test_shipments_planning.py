"""Shipments planned for reservations beside shipments planned by hand, in the embedded
system (in-process bus, SQLite): which planned shipment a reservation joins, and what
a shipment made by hand for reservations says of their job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import REQUIRED_BY, SITE, ApiClient, reservation_body, seed_catalogue

INV = "/inventory/api/v1"
SHP = "/shipments/api/v1/shipments"
GANZI = {"site": SITE["name"], "region": SITE["region"]}


@pytest.fixture
def api(embedded) -> ApiClient:
    client = embedded.api("logistics")
    seed_catalogue(client)
    reply = client.post(
        f"{INV}/receipts",
        {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 2, "serials": ["C-1", "C-2"]},
    )
    assert reply.status == 201, reply
    reply = client.post(
        f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 20}
    )
    assert reply.status == 201, reply
    return client


def reserve(api: ApiClient, **changes) -> dict:
    reply = api.post(f"{INV}/reservations", reservation_body(**{"warehouse": "CDU", **changes}))
    assert reply.status == 201, reply
    return reply.body


def planned_shipment(api: ApiClient, reservation_id: str) -> dict:
    [shipment] = api.wait_for(SHP, lambda body: len(body) == 1, reservation_id=reservation_id)
    return shipment


def by_hand(api: ApiClient, destination: dict, lines: list[dict], **fields) -> dict:
    body = {"origin": "CDU", "destination": destination, "mode": "courier", "lines": lines}
    reply = api.post(SHP, {**body, **fields})
    assert reply.status == 201, reply
    return reply.body


def gel(quantity: int, **line) -> dict:
    return {"part_number": "GEL-250", "quantity": quantity, **line}


class TestPlanningBesideShipmentsMadeByHand:
    def test_a_reservation_joins_its_jobs_shipment_made_by_hand_with_no_required_by(
        self, api: ApiClient
    ) -> None:
        made = by_hand(api, GANZI, [gel(3)], job_id="JOB-1")
        assert made["required_by"] is None
        reservation = reserve(api)
        shipment = planned_shipment(api, reservation["id"])
        assert shipment["id"] == made["id"]
        assert [line["reservation_id"] for line in shipment["lines"]] == [None, reservation["id"]]
        # The job's need, owner and priority now on the shipment, for tracking to judge.
        assert shipment["required_by"] == reservation["required_by"]
        assert (shipment["owner"], shipment["priority"]) == ("li.wei", "machine_down")
        assert shipment["status"] == "planned"

    def test_a_reservation_does_not_join_a_transfer_or_a_shipment_to_another_site(
        self, api: ApiClient
    ) -> None:
        transfer = by_hand(api, {"warehouse": "SHA"}, [gel(4)], job_id="JOB-1")
        elsewhere = by_hand(
            api,
            {"site": "Kangding clinic", "region": "sichuan"},
            [gel(1)],
            job_id="JOB-1",
            required_by=REQUIRED_BY,
        )
        other_region = by_hand(
            api,
            {"site": SITE["name"], "region": "east-china"},
            [gel(1)],
            job_id="JOB-1",
            required_by=REQUIRED_BY,
        )
        reservation = reserve(api)
        shipment = planned_shipment(api, reservation["id"])
        assert shipment["id"] not in (transfer["id"], elsewhere["id"], other_region["id"])
        assert shipment["destination"] == GANZI
        assert shipment["origin"] == "CDU"
        for made in (transfer, elsewhere, other_region):
            lines = api.get(f"{SHP}/{made['id']}").body["lines"]
            assert [line["reservation_id"] for line in lines] == [None]
        # A second reservation of the job joins the shipment to its site.
        second = reserve(api, part_number="GEL-250", quantity=2)
        body = api.wait_for(f"{SHP}/{shipment['id']}", lambda x: len(x["lines"]) == 2)
        assert body["lines"][1]["reservation_id"] == second["id"]
        assert len(api.get(SHP, job_id="JOB-1").body) == 4


class TestHandover:
    def test_a_job_handed_over_names_its_new_owner_on_every_shipment_on_its_way(
        self, api: ApiClient
    ) -> None:
        # The dispatcher reserves the tube and it leaves; the job then goes to its
        # field engineer, who reserves gel from the same depot and from Shanghai.
        tube = reserve(api, owner="desk.tier1")
        on_its_way = planned_shipment(api, tube["id"])
        reply = api.post(f"{SHP}/{on_its_way['id']}/dispatch", {"mode": "hand_carry"})
        assert reply.status == 200, reply
        gel_here = reserve(api, owner="eng.primary", part_number="GEL-250", quantity=2)
        joined = planned_shipment(api, gel_here["id"])
        reply = api.post(
            f"{INV}/receipts", {"warehouse": "SHA", "part_number": "GEL-250", "quantity": 5}
        )
        assert reply.status == 201, reply
        gel_there = reserve(api, owner="eng.primary", part_number="GEL-250", warehouse="SHA")
        from_shanghai = planned_shipment(api, gel_there["id"])
        for shipment in (on_its_way, joined, from_shanghai):
            body = api.wait_for(f"{SHP}/{shipment['id']}", lambda x: x["owner"] == "eng.primary")
            assert body["job_id"] == "JOB-1"
        assert api.get(f"{SHP}/{on_its_way['id']}").body["status"] == "in_transit"
        # Tracking, which heard the same, names the same owner.
        job = api.get("/tracking/api/v1/jobs/JOB-1").body
        assert job["owner"] == "eng.primary"


class TestShipmentsMadeByHandForReservations:
    def test_it_carries_the_job_of_its_reservations(self, api: ApiClient) -> None:
        reservation = reserve(api, part_number="GEL-250", quantity=2)
        planned = planned_shipment(api, reservation["id"])
        assert api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "by hand"}).status == 200
        made = by_hand(api, GANZI, [gel(2, reservation_id=reservation["id"])])
        assert made["job_id"] == "JOB-1"
        assert made["required_by"] == reservation["required_by"]
        assert (made["owner"], made["priority"]) == ("li.wei", "machine_down")
        assert made == api.get(f"{SHP}/{made['id']}").body
        open_for_job = [x["id"] for x in api.get(SHP, job_id="JOB-1", status="planned").body]
        assert open_for_job == [made["id"]]

    def test_what_is_given_stands(self, api: ApiClient) -> None:
        reservation = reserve(api, part_number="GEL-250", quantity=2)
        planned = planned_shipment(api, reservation["id"])
        api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "needed sooner"})
        sooner = "2026-11-28T08:00:00+00:00"
        made = by_hand(api, GANZI, [gel(2, reservation_id=reservation["id"])], required_by=sooner)
        assert (made["job_id"], made["required_by"]) == ("JOB-1", sooner)

    def test_a_line_that_differs_from_its_reservation_is_refused(self, api: ApiClient) -> None:
        reservation = reserve(api, part_number="GEL-250", quantity=2)
        planned = planned_shipment(api, reservation["id"])
        api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "by hand"})
        body = {"origin": "CDU", "destination": GANZI, "mode": "courier"}
        reply = api.post(SHP, {**body, "lines": [gel(5, reservation_id=reservation["id"])]})
        assert reply.status == 422, reply
        [message] = reply.body["errors"]["lines"]
        assert "5 GEL-250" in message and "2 GEL-250" in message
        other_part = {"part_number": "XRT-2000", "quantity": 2, "reservation_id": reservation["id"]}
        reply = api.post(SHP, {**body, "lines": [other_part]})
        assert reply.status == 422, reply
        assert "lines" in reply.body["errors"]
        # Nothing was planned by the refused requests.
        carrying = api.get(SHP, reservation_id=reservation["id"]).body
        assert [x["id"] for x in carrying] == [planned["id"]]
        made = by_hand(api, GANZI, [gel(2, reservation_id=reservation["id"])])
        assert made["lines"][0]["quantity"] == 2

    def test_it_may_not_name_another_job_than_its_reservations(self, api: ApiClient) -> None:
        reservation = reserve(api, part_number="GEL-250", quantity=2)
        planned = planned_shipment(api, reservation["id"])
        api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "by hand"})
        line = gel(2, reservation_id=reservation["id"])
        body = {"origin": "CDU", "destination": GANZI, "mode": "courier", "lines": [line]}
        reply = api.post(SHP, {**body, "job_id": "JOB-OTHER"})
        assert reply.status == 422, reply
        assert reply.body["errors"]["job_id"] == [
            "its reservations are for job JOB-1, not JOB-OTHER"
        ]
        assert [x["id"] for x in api.get(SHP, reservation_id=reservation["id"]).body] == [
            planned["id"]
        ]
        assert by_hand(api, GANZI, [line], job_id="JOB-1")["job_id"] == "JOB-1"

    def test_one_for_two_jobs_alerts_the_job_that_needs_it_first(self, api: ApiClient) -> None:
        soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        first = reserve(api, part_number="GEL-250", quantity=1, job_id="MIX-2", owner="own.2")
        second = reserve(
            api, part_number="GEL-250", quantity=1, job_id="MIX-1", owner="own.1", required_by=soon
        )
        for reservation in (first, second):
            planned = planned_shipment(api, reservation["id"])
            api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "one shipment for both"})
        lines = [gel(1, reservation_id=first["id"]), gel(1, reservation_id=second["id"])]
        made = by_hand(api, GANZI, lines)
        [alert] = api.wait_for(
            "/tracking/api/v1/alerts",
            lambda body: len(body) == 1,
            status="open",
            kind="late",
        )
        assert (alert["shipment_id"], alert["job_id"], alert["owner"]) == (
            made["id"],
            "MIX-1",
            "own.1",
        )
        hurried = api.get("/tracking/api/v1/jobs/MIX-1").body
        assert (hurried["risk"], hurried["parts"][0]["shipment_id"]) == ("late", made["id"])
        patient = api.get("/tracking/api/v1/jobs/MIX-2").body
        assert (patient["risk"], patient["parts"][0]["shipment_id"]) == ("on_track", made["id"])

    def test_a_reservation_goes_to_its_jobs_site_only(self, api: ApiClient) -> None:
        reservation = reserve(api, part_number="GEL-250", quantity=3)
        planned = planned_shipment(api, reservation["id"])
        api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "consolidate via Shanghai"})
        line = gel(3, reservation_id=reservation["id"])
        body = {"origin": "CDU", "mode": "courier", "lines": [line]}
        for elsewhere in (
            {"warehouse": "SHA"},
            {"site": "Kashgar Hospital", "region": "xinjiang"},
            {"site": "Another Hospital", "region": SITE["region"]},
        ):
            reply = api.post(SHP, {**body, "destination": elsewhere})
            assert reply.status == 422, (elsewhere, reply)
            [message] = reply.body["errors"]["destination"]
            assert SITE["name"] in message
        # Refused requests planned nothing; the job's own site is fine, however typed.
        carrying = api.get(SHP, reservation_id=reservation["id"]).body
        assert [x["id"] for x in carrying] == [planned["id"]]
        typed = {"site": f" {SITE['name'].upper()} ", "region": SITE["region"]}
        assert by_hand(api, typed, [line])["status"] == "planned"

    def test_a_reservation_line_names_the_units_it_holds(self, api: ApiClient) -> None:
        tube = reserve(api, part_number="XRT-2000", quantity=1)
        planned = planned_shipment(api, tube["id"])
        api.post(f"{SHP}/{planned['id']}/cancel", {"reason": "by hand"})
        line = {"part_number": "XRT-2000", "quantity": 1, "reservation_id": tube["id"]}
        body = {"origin": "CDU", "destination": GANZI, "mode": "hand_carry"}
        held = tube["serials"]
        other = "C-2" if held == ["C-1"] else "C-1"
        for wrong in ([other], ["BOGUS-777"]):
            reply = api.post(SHP, {**body, "lines": [{**line, "serials": wrong}]})
            assert reply.status == 422, reply
            assert held[0] in reply.body["errors"]["lines"][0]
        # Named rightly, or not named: the line shows the units that travel.
        made = by_hand(api, GANZI, [line], mode="hand_carry")
        assert made["lines"][0]["serials"] == held


class TestTransferDestinations:
    def test_a_sites_region_is_written_as_the_warehouses_there_write_it(
        self, api: ApiClient
    ) -> None:
        made = by_hand(api, {"site": "Kangding clinic", "region": " SICHUAN"}, [gel(1)])
        assert made["destination"] == {"site": "Kangding clinic", "region": "sichuan"}
        elsewhere = by_hand(api, {"site": "Lhasa clinic", "region": "Tibet"}, [gel(1)])
        assert elsewhere["destination"]["region"] == "Tibet"

    def test_a_region_given_with_a_warehouse_must_be_its_own(self, api: ApiClient) -> None:
        body = {"origin": "CDU", "mode": "courier", "lines": [gel(1)]}
        sha = api.get(f"{INV}/warehouses").body
        (region,) = [w["region"] for w in sha if w["code"] == "SHA"]
        wrong = api.post(SHP, {**body, "destination": {"warehouse": "SHA", "region": "mars"}})
        assert wrong.status == 422, wrong
        assert region in wrong.body["errors"]["destination"][0]
        assert api.get(SHP).body == []
        # Its own region, however typed, is fine.
        made = by_hand(api, {"warehouse": "SHA", "region": region.upper()}, [gel(1)])
        assert made["destination"] == {"warehouse": "SHA", "region": region}
