"""The inventory API as logistics staff and other systems use it (SQLite, in-process)."""

from __future__ import annotations

import json

import pytest

from services.inventory.schemas import ReserveCommand
from tests.support import ApiClient, reservation_body, seed_catalogue

V1 = "/inventory/api/v1"


@pytest.fixture
def api(inventory) -> ApiClient:
    client = inventory.api("logistics")
    seed_catalogue(client)
    return client


def receive_tubes(api: ApiClient, warehouse: str, *serials: str) -> None:
    reply = api.post(
        f"{V1}/receipts",
        {
            "warehouse": warehouse,
            "part_number": "XRT-2000",
            "quantity": len(serials),
            "serials": list(serials),
        },
    )
    assert reply.status == 201, reply


def stock_of(api: ApiClient, part: str, warehouse: str) -> dict:
    rows = api.get(f"{V1}/stock", part_number=part, warehouse=warehouse).body
    return rows[0] if rows else {"on_hand": 0, "reserved": 0, "available": 0}


class TestWarehousesAndParts:
    def test_created_warehouse_is_listed(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/warehouses",
            {"code": "VAN-07", "name": "Li's van", "region": "sichuan", "kind": "van"},
        )
        assert reply.status == 201
        assert reply.body["code"] == "VAN-07"
        codes = [w["code"] for w in api.get(f"{V1}/warehouses").body]
        assert codes == ["CDU", "SHA", "VAN-07"]

    def test_duplicate_code_is_a_conflict(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/warehouses", {"code": "SHA", "name": "x", "region": "y", "kind": "depot"}
        )
        assert reply.status == 409
        assert reply.headers["Content-Type"] == "application/problem+json"

    def test_a_code_that_differs_only_in_case_is_a_conflict(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/warehouses", {"code": "cdu", "name": "x", "region": "y", "kind": "depot"}
        )
        assert reply.status == 409
        assert "CDU" in reply.body["detail"]
        assert [w["code"] for w in api.get(f"{V1}/warehouses").body] == ["CDU", "SHA"]

    def test_a_region_is_written_as_the_warehouses_there_write_it(self, api: ApiClient) -> None:
        van = {"code": "VAN-07", "name": "Li's van", "region": " Sichuan ", "kind": "van"}
        assert api.post(f"{V1}/warehouses", van).body["region"] == "sichuan"
        reply = api.patch(f"{V1}/warehouses/VAN-07", {"region": "EAST-CHINA"})
        assert reply.body["region"] == "east-china"
        # A region no warehouse is in yet stays as typed.
        reply = api.patch(f"{V1}/warehouses/VAN-07", {"region": "Tibet"})
        assert reply.body["region"] == "Tibet"

    def test_unknown_kind_is_refused_field_by_field(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/warehouses", {"code": "X1", "name": "x", "region": "y", "kind": "garage"}
        )
        assert reply.status == 422
        assert set(reply.body["errors"]) == {"kind"}

    def test_part_is_read_back(self, api: ApiClient) -> None:
        reply = api.get(f"{V1}/parts/XRT-2000")
        assert reply.status == 200
        assert reply.body["serialized"] is True
        assert api.get(f"{V1}/parts/NOPE").status == 404

    def test_warehouse_can_be_renamed(self, api: ApiClient) -> None:
        reply = api.patch(f"{V1}/warehouses/CDU", {"name": "Chengdu depot 2"})
        assert reply.status == 200
        assert api.get(f"{V1}/warehouses/CDU").body["name"] == "Chengdu depot 2"

    def test_codes_and_serials_with_a_slash_can_be_looked_up(self, api: ApiClient) -> None:
        part = {"part_number": "XRT/2000-B", "description": "Tube, B series", "serialized": True}
        assert api.post(f"{V1}/parts", part).status == 201
        receipt = {
            "warehouse": "CDU",
            "part_number": "XRT/2000-B",
            "quantity": 1,
            "serials": ["SN/001"],
        }
        assert api.post(f"{V1}/receipts", receipt).status == 201
        for path in (f"{V1}/parts/XRT/2000-B", f"{V1}/parts/XRT%2F2000-B"):
            reply = api.get(path)
            assert reply.status == 200, path
            assert reply.body["part_number"] == "XRT/2000-B"
        assert api.get(f"{V1}/units/SN%2F001").body["part_number"] == "XRT/2000-B"


class TestReceipts:
    def test_serialized_receipt_creates_units_and_stock(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/receipts",
            {
                "warehouse": "CDU",
                "part_number": "XRT-2000",
                "quantity": 2,
                "serials": ["T-1", "T-2"],
                "reference": "PO-77",
            },
        )
        assert reply.status == 201
        assert len(reply.body["movement_ids"]) == 2
        assert reply.body["stock"]["on_hand"] == 2
        unit = api.get(f"{V1}/units/T-1").body
        assert unit["status"] == "available"
        assert unit["warehouse"] == "CDU"
        assert [h["kind"] for h in unit["history"]] == ["receipt"]

    def test_serial_count_must_match_quantity(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/receipts",
            {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 2, "serials": ["T-1"]},
        )
        assert reply.status == 422
        assert "serials" in reply.body["errors"]

    def test_serials_are_unique_across_warehouses(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1")
        reply = api.post(
            f"{V1}/receipts",
            {"warehouse": "SHA", "part_number": "XRT-2000", "quantity": 1, "serials": ["T-1"]},
        )
        assert reply.status == 409
        assert stock_of(api, "XRT-2000", "SHA")["on_hand"] == 0

    def test_repeated_serial_in_one_receipt_is_refused(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/receipts",
            {
                "warehouse": "CDU",
                "part_number": "XRT-2000",
                "quantity": 2,
                "serials": ["T-1", "T-1"],
            },
        )
        assert reply.status == 422

    def test_bulk_part_takes_no_serials(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/receipts",
            {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 1, "serials": ["G"]},
        )
        assert reply.status == 422

    def test_unknown_warehouse_or_part_is_404(self, api: ApiClient) -> None:
        body = {"warehouse": "NOPE", "part_number": "GEL-250", "quantity": 1}
        assert api.post(f"{V1}/receipts", body).status == 404
        body = {"warehouse": "CDU", "part_number": "NOPE", "quantity": 1}
        assert api.post(f"{V1}/receipts", body).status == 404


class TestAdjustments:
    def test_adjustment_changes_on_hand_with_a_reason(self, api: ApiClient) -> None:
        api.post(f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 10})
        reply = api.post(
            f"{V1}/adjustments",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": -3, "reason": "count"},
        )
        assert reply.status == 201
        assert reply.body["stock"]["on_hand"] == 7

    def test_adjustment_below_reserved_is_a_conflict(self, api: ApiClient) -> None:
        api.post(f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 5})
        reply = api.post(
            f"{V1}/reservations",
            reservation_body(part_number="GEL-250", quantity=4, warehouse="CDU"),
        )
        assert reply.status == 201
        reply = api.post(
            f"{V1}/adjustments",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": -2, "reason": "broken"},
        )
        assert reply.status == 409
        assert stock_of(api, "GEL-250", "CDU") | {} == {
            **stock_of(api, "GEL-250", "CDU"),
            "on_hand": 5,
            "reserved": 4,
            "available": 1,
        }

    def test_serialized_write_down_names_the_units(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2")
        reply = api.post(
            f"{V1}/adjustments",
            {
                "warehouse": "CDU",
                "part_number": "XRT-2000",
                "delta": -1,
                "reason": "dropped",
                "serials": ["T-2"],
            },
        )
        assert reply.status == 201
        assert api.get(f"{V1}/units/T-2").body["status"] == "written_off"

    def test_serialized_write_down_without_serials_takes_units_no_one_was_promised(
        self, api: ApiClient
    ) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2", "T-3")
        held = api.post(
            f"{V1}/reservations", reservation_body(part_number="XRT-2000", warehouse="CDU")
        )
        assert held.status == 201
        reply = api.post(
            f"{V1}/adjustments",
            {"warehouse": "CDU", "part_number": "XRT-2000", "delta": -2, "reason": "flood"},
        )
        assert reply.status == 201
        assert reply.body["stock"] | {} == {**reply.body["stock"], "on_hand": 1, "available": 0}
        statuses = {s: api.get(f"{V1}/units/{s}").body["status"] for s in ("T-1", "T-2", "T-3")}
        assert statuses[held.body["serials"][0]] == "reserved"
        assert sorted(statuses.values()) == ["reserved", "written_off", "written_off"]
        lines = api.get(f"{V1}/movements", part_number="XRT-2000").body
        written_off = {line["serial"] for line in lines if line["kind"] == "adjustment"}
        assert written_off == {s for s, status in statuses.items() if status == "written_off"}
        assert set(reply.body["serials"]) == written_off
        # A count that would take the promised unit is still refused.
        reply = api.post(
            f"{V1}/adjustments",
            {"warehouse": "CDU", "part_number": "XRT-2000", "delta": -1, "reason": "flood"},
        )
        assert reply.status == 409

    def test_a_unit_written_off_that_turns_up_again_comes_back(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2")
        write_off = {
            "part_number": "XRT-2000",
            "delta": -1,
            "reason": "missing",
            "serials": ["T-2"],
        }
        assert api.post(f"{V1}/adjustments", {"warehouse": "CDU", **write_off}).status == 201
        # Found at another warehouse: received there under its own serial.
        receive_tubes(api, "SHA", "T-2")
        unit = api.get(f"{V1}/units/T-2").body
        assert (unit["warehouse"], unit["status"]) == ("SHA", "available")
        assert [line["kind"] for line in unit["history"]] == ["receipt", "adjustment", "receipt"]
        assert stock_of(api, "XRT-2000", "SHA")["on_hand"] == 1
        # A unit still in use, or a serial of another part, stays refused.
        reply = api.post(
            f"{V1}/receipts",
            {"warehouse": "SHA", "part_number": "XRT-2000", "quantity": 1, "serials": ["T-1"]},
        )
        assert reply.status == 409 and reply.body["serials"] == ["T-1"]

    def test_serialized_count_below_reserved_is_a_conflict_before_serials_matter(
        self, api: ApiClient
    ) -> None:
        receive_tubes(api, "CDU", "T-1")
        assert api.post(f"{V1}/reservations", reservation_body(warehouse="CDU")).status == 201
        write_down = {"warehouse": "CDU", "part_number": "XRT-2000", "delta": -1, "reason": "count"}
        assert api.post(f"{V1}/adjustments", write_down).status == 409
        assert api.post(f"{V1}/adjustments", {**write_down, "warehouse": "SHA"}).status == 409
        receive_tubes(api, "CDU", "T-2")
        # The count allows it now: the unit no one was promised is the one written off.
        assert api.post(f"{V1}/adjustments", write_down).status == 201
        assert api.get(f"{V1}/units/T-2").body["status"] == "written_off"
        assert api.get(f"{V1}/units/T-1").body["status"] == "reserved"

    def test_zero_delta_is_refused(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/adjustments",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": 0, "reason": "x"},
        )
        assert reply.status == 422


class TestReservePart:
    def test_reservation_holds_specific_units(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1")
        reply = api.post(f"{V1}/reservations", reservation_body())
        assert reply.status == 201, reply
        reservation = reply.body
        assert reservation["status"] == "confirmed"
        assert reservation["serials"] == ["T-1"]
        assert reservation["warehouse"] == "CDU"
        assert reservation["history"][0]["status"] == "confirmed"
        unit = api.get(f"{V1}/units/T-1").body
        assert unit["status"] == "reserved"
        assert unit["reservation_id"] == reservation["id"]
        assert stock_of(api, "XRT-2000", "CDU")["available"] == 0

    def test_auto_sourcing_prefers_the_site_region(self, api: ApiClient) -> None:
        receive_tubes(api, "SHA", "S-1", "S-2", "S-3")
        receive_tubes(api, "CDU", "C-1")
        reply = api.post(f"{V1}/reservations", reservation_body())
        assert reply.body["warehouse"] == "CDU"
        reply = api.post(f"{V1}/reservations", reservation_body(job_id="JOB-2"))
        assert reply.body["warehouse"] == "SHA"

    def test_the_site_region_is_the_same_region_whatever_its_case(
        self, inventory, api: ApiClient
    ) -> None:
        # More in Shanghai, so only the region tells the depot in Sichuan apart.
        receive_tubes(api, "SHA", "S-1", "S-2", "S-3")
        receive_tubes(api, "CDU", "C-1")
        site = {"name": "Ganzi County Hospital", "region": "SICHUAN "}
        reply = api.post(f"{V1}/reservations", reservation_body(site=site))
        assert reply.status == 201, reply
        assert reply.body["warehouse"] == "CDU"
        assert reply.body["site"] == {"name": "Ganzi County Hospital", "region": "sichuan"}
        # A command sent again under its request_id, typed the same way, is the same
        # request: answered with the first reservation, not refused as another site's.
        command = ReserveCommand().load(
            reservation_body(site=site, request_id="desk-1", job_id="JOB-9", warehouse="SHA")
        )
        first = inventory.service.reserve_part(command)
        assert inventory.service.reserve_part(command)["id"] == first["id"]

    def test_shortage_answers_with_alternatives(self, api: ApiClient) -> None:
        receive_tubes(api, "SHA", "S-1")
        reply = api.post(f"{V1}/reservations", reservation_body(warehouse="CDU"))
        assert reply.status == 409
        assert reply.headers["Content-Type"] == "application/problem+json"
        [alternative] = reply.body["alternatives"]
        assert alternative["warehouse"] == "SHA"
        assert alternative["available"] == 1
        assert alternative["estimated_arrival"].endswith("+00:00")
        assert reply.body["preemptible"] == []
        assert reply.body["held"] == []
        # The one at SHA reserved: none free, but not none in stock.
        assert api.post(f"{V1}/reservations", reservation_body(warehouse="SHA")).status == 201
        refused = api.post(f"{V1}/reservations", reservation_body(job_id="JOB-2"))
        assert refused.status == 409
        assert refused.body["alternatives"] == []
        assert refused.body["held"] == [{"warehouse": "SHA", "reserved": 1}]
        # The job's own reservation is not another job's.
        again = api.post(f"{V1}/reservations", reservation_body())
        assert again.status == 409
        assert again.body["held"] == []

    def test_machine_down_preempts_a_routine_reservation_only_when_asked(
        self, api: ApiClient
    ) -> None:
        receive_tubes(api, "CDU", "T-1")
        routine = api.post(
            f"{V1}/reservations", reservation_body(job_id="PM-9", priority="routine")
        ).body
        refused = api.post(f"{V1}/reservations", reservation_body(warehouse="CDU"))
        assert refused.status == 409
        assert [p["id"] for p in refused.body["preemptible"]] == [routine["id"]]
        assert api.get(f"{V1}/reservations/{routine['id']}").body["status"] == "confirmed"

        taken = api.post(
            f"{V1}/reservations", reservation_body(warehouse="CDU", preempt=[routine["id"]])
        )
        assert taken.status == 201, taken
        assert taken.body["serials"] == ["T-1"]
        preempted = api.get(f"{V1}/reservations/{routine['id']}").body
        assert preempted["status"] == "preempted"
        assert preempted["preempted_by"] == taken.body["id"]
        assert preempted["history"][-1]["note"] == f"preempted by {taken.body['id']}"

    def test_preempting_too_little_is_refused_with_the_stock_as_it_stays(
        self, api: ApiClient
    ) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2")
        routine = api.post(
            f"{V1}/reservations",
            reservation_body(job_id="PM-9", priority="routine", quantity=2, warehouse="CDU"),
        ).body
        refused = api.post(
            f"{V1}/reservations",
            reservation_body(warehouse="CDU", quantity=3, preempt=[routine["id"]]),
        )
        assert refused.status == 409, refused
        # Nothing is free at CDU, and the routine reservation can still be preempted.
        assert [a["warehouse"] for a in refused.body["alternatives"]] == []
        assert [p["id"] for p in refused.body["preemptible"]] == [routine["id"]]
        assert api.get(f"{V1}/reservations/{routine['id']}").body["status"] == "confirmed"
        assert stock_of(api, "XRT-2000", "CDU")["available"] == 0

    def test_only_machine_down_may_preempt(self, api: ApiClient) -> None:
        reply = api.post(f"{V1}/reservations", reservation_body(priority="urgent", preempt=["x"]))
        assert reply.status == 422
        assert "preempt" in reply.body["errors"]

    def test_release_returns_stock_once(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1")
        reservation = api.post(f"{V1}/reservations", reservation_body()).body
        reply = api.post(f"{V1}/reservations/{reservation['id']}/release", {"reason": "fixed"})
        assert reply.status == 200
        assert reply.body["status"] == "released"
        assert stock_of(api, "XRT-2000", "CDU")["available"] == 1
        assert api.get(f"{V1}/units/T-1").body["status"] == "available"
        again = api.post(f"{V1}/reservations/{reservation['id']}/release", {})
        assert again.status == 409
        assert "released" in again.body["detail"]

    def test_release_without_body(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1")
        reservation = api.post(f"{V1}/reservations", reservation_body()).body
        reply = api.client.post(
            f"{V1}/reservations/{reservation['id']}/release",
            headers={"Authorization": f"Bearer {api.token}"},
        )
        assert reply.status_code == 200

    def test_reservations_are_listed_by_job(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2")
        api.post(f"{V1}/reservations", reservation_body(job_id="A"))
        api.post(f"{V1}/reservations", reservation_body(job_id="B"))
        reply = api.get(f"{V1}/reservations", job_id="B")
        assert [r["job_id"] for r in reply.body] == ["B"]
        pagination = json.loads(reply.headers["X-Pagination"])
        assert pagination["total"] == 1

    def test_unknown_reservation_is_404(self, api: ApiClient) -> None:
        assert api.get(f"{V1}/reservations/nope").status == 404
        assert api.post(f"{V1}/reservations/nope/release", {}).status == 404


class TestLedger:
    def test_every_number_is_explained_by_movements(self, api: ApiClient, inventory) -> None:
        receive_tubes(api, "CDU", "T-1", "T-2", "T-3")
        first = api.post(f"{V1}/reservations", reservation_body(quantity=2)).body
        api.post(f"{V1}/reservations/{first['id']}/release", {})
        api.post(f"{V1}/reservations", reservation_body(job_id="J2"))
        api.post(
            f"{V1}/adjustments",
            {
                "warehouse": "CDU",
                "part_number": "XRT-2000",
                "delta": -1,
                "reason": "count",
                "serials": ["T-3"],
            },
        )
        kinds = [m["kind"] for m in api.get(f"{V1}/movements", part_number="XRT-2000").body]
        assert kinds.count("receipt") == 3
        assert kinds.count("reservation") == 3
        assert kinds.count("release") == 2
        assert kinds.count("adjustment") == 1
        for row in inventory.service.ledger_balances():
            assert row["on_hand"] == row["ledger_on_hand"]
            assert row["reserved"] == row["ledger_reserved"]

    def test_movements_since(self, api: ApiClient) -> None:
        receive_tubes(api, "CDU", "T-1")
        assert api.get(f"{V1}/movements", since="2000-01-01T00:00:00+00:00").body
        assert api.get(f"{V1}/movements", since="2999-01-01T00:00:00+00:00").body == []
        assert api.get(f"{V1}/movements", since="2000-01-01T00:00:00").status == 422

    def test_unknown_unit_is_404(self, api: ApiClient) -> None:
        assert api.get(f"{V1}/units/NOPE").status == 404
