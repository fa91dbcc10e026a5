"""Shipments' pages over HTTP: a reservation's planned shipment is listed, dispatched
by hand-carry with its checkpoints, delivered; planning and cancelling by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.browser.conftest import Site
from tests.browser.pageclient import PageClient, csrf_token
from tests.conftest import wait_until


def reserve_tube(site: Site, job_id: str = "JOB-7") -> dict[str, Any]:
    return site.inventory.reserve_part(
        {
            "job_id": job_id,
            "part_number": "XRT-2000",
            "quantity": 1,
            "required_by": site.clock.now().replace(day=26),
            "priority": "machine_down",
            "owner": "li.wei",
            "site": {"name": "Ganzi County Hospital", "region": "sichuan"},
        }
    )


def planned_shipment(site: Site, job_id: str = "JOB-7") -> dict[str, Any]:
    reserve_tube(site, job_id)
    return wait_until(
        lambda: next(iter(site.shipments.list_shipments(job_id=job_id).items), None),
        message="the reservation's shipment to be planned",
    )


def on_its_way(site: Site) -> tuple[dict[str, Any], str]:
    """A job's shipment dispatched by hand, and the address of its page."""
    shipment = planned_shipment(site)
    site.shipments.dispatch(shipment["id"], {"mode": "hand_carry"})
    return shipment, f"/shipments/{shipment['id']}"


@pytest.fixture
def staff(site: Site) -> PageClient:
    return site.client("dispatcher")


class TestList:
    def test_a_reservation_shows_up_as_a_planned_shipment(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = planned_shipment(site)
        page = staff.get("/shipments/")
        assert page.status == 200
        assert "JOB-7" in page.body_text and "planned" in page.body_text
        assert f"/shipments/{shipment['id']}" in page.html
        detail = staff.get(f"/shipments/{shipment['id']}")
        assert "1 × XRT-2000 from SHA to Ganzi County Hospital (sichuan)" in detail.body_text

    def test_filters_by_status(self, site: Site, staff: PageClient) -> None:
        planned_shipment(site)
        assert "JOB-7" not in staff.get("/shipments/", status="delivered").text("main")
        assert staff.get("/shipments/", status="sideways").status == 422


class TestDispatch:
    def test_hand_carry_with_checkpoints(self, site: Site, staff: PageClient) -> None:
        shipment = planned_shipment(site)
        path = f"/shipments/{shipment['id']}/dispatch"
        reply = staff.submit(
            path,
            {
                "mode": "hand_carry",
                "utc_offset": "+08:00",
                "checkpoints.0.name": "Kangding",
                "checkpoints.0.due_at": "2026-11-23T18:00",
                "checkpoints.1.name": "Zheduo Pass",
                "checkpoints.1.due_at": "2026-11-23T21:00",
                "checkpoints.2.name": "",
                "checkpoints.2.due_at": "",
            },
        )
        assert reply.status == 302, reply.body_text
        page = staff.get(reply.location)
        assert "Dispatched hand-carry, 2 checkpoints to pass." in page.body_text
        dispatched = site.shipments.get_shipment(shipment["id"])
        assert dispatched["status"] == "in_transit"
        assert [c["name"] for c in dispatched["checkpoints"]] == ["Kangding", "Zheduo Pass"]
        assert dispatched["checkpoints"][0]["due_at"].isoformat() == "2026-11-23T10:00:00+00:00"
        # Kangding gone by unscanned is overdue; once delivered, it was not scanned.
        site.clock.advance(timedelta(hours=4, minutes=30))
        rows = staff.get(f"/shipments/{shipment['id']}").text("main")
        assert "Kangding 2026-11-23 18:00 UTC+08:00 overdue" in rows
        assert "Zheduo Pass 2026-11-23 21:00 UTC+08:00 not yet" in rows
        site.shipments.deliver(shipment["id"], {})
        rows = staff.get(f"/shipments/{shipment['id']}").text("main")
        assert "Kangding 2026-11-23 18:00 UTC+08:00 not scanned" in rows

    def test_a_carrier_is_asked_for_and_the_checkpoints_kept(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = planned_shipment(site)
        reply = staff.submit(
            f"/shipments/{shipment['id']}/dispatch",
            {
                "mode": "carrier",
                "checkpoints.0.name": "Chengdu hub",
                "checkpoints.0.due_at": "2026-11-23T18:00",
            },
        )
        assert reply.status == 422
        assert "required when the mode is carrier" in reply.text("carrier-error")
        assert reply.value("checkpoints.0.name") == "Chengdu hub"
        assert site.shipments.get_shipment(shipment["id"])["status"] == "planned"

    def test_a_checkpoint_without_its_time_is_marked_on_its_row(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = planned_shipment(site)
        reply = staff.submit(
            f"/shipments/{shipment['id']}/dispatch",
            {
                "mode": "hand_carry",
                "checkpoints.0.name": "",
                "checkpoints.1.name": "Yajiang",
                "checkpoints.1.due_at": "",
            },
        )
        assert reply.status == 422
        assert reply.text("checkpoints.1.due_at-error")
        assert reply.value("checkpoints.1.name") == "Yajiang"
        assert "Please correct the fields marked below." in reply.body_text

    def test_more_rows_keeps_what_was_typed(self, site: Site, staff: PageClient) -> None:
        shipment = planned_shipment(site)
        reply = staff.submit(
            f"/shipments/{shipment['id']}/dispatch",
            {
                "mode": "hand_carry",
                "checkpoints.0.name": "Kangding",
                "checkpoints.0.due_at": "2026-11-23T18:00",
                "more_rows": "checkpoints",
            },
        )
        assert reply.status == 200
        assert reply.value("checkpoints.0.name") == "Kangding"
        assert 'name="checkpoints.7.name"' in reply.html
        assert site.shipments.get_shipment(shipment["id"])["status"] == "planned"


class TestDeliverAndCancel:
    def test_delivery_is_recorded(self, site: Site, staff: PageClient) -> None:
        shipment, detail = on_its_way(site)
        reply = staff.submit(detail, {"received_by": "Dr. Zhang"}, action=f"{detail}/deliver")
        assert reply.status == 302
        page = staff.get(reply.location).body_text
        assert "received by Dr. Zhang" in page
        assert site.shipments.get_shipment(shipment["id"])["status"] == "delivered"
        # Delivered: no countdown to the required-by any more.
        required_by = page.split("Required by", 1)[1].split("Dispatched", 1)[0]
        assert "(" not in required_by, required_by

    def test_a_delivery_in_the_future_is_refused_next_to_the_time(
        self, site: Site, staff: PageClient
    ) -> None:
        _, detail = on_its_way(site)
        reply = staff.submit(
            detail,
            {"delivered_at": "2027-01-01T10:00", "utc_offset": "+00:00", "received_by": "Zhang"},
            action=f"{detail}/deliver",
        )
        assert reply.status == 422
        assert "future" in reply.text("delivered_at-error")
        assert reply.value("received_by") == "Zhang"

    def test_a_delivery_before_the_dispatch_is_refused_in_the_readers_zone(
        self, site: Site, staff: PageClient
    ) -> None:
        # Dispatched at 06:00:30 UTC, 14:00 in Chengdu.
        site.clock.advance(timedelta(seconds=30))
        shipment, detail = on_its_way(site)
        typed = {"delivered_at": "2026-11-23T06:00", "utc_offset": "+08:00"}
        reply = staff.submit(detail, typed, action=f"{detail}/deliver")
        assert reply.status == 422
        assert "before the dispatch (2026-11-23 14:00 UTC+08:00)" in reply.text(
            "delivered_at-error"
        )
        # Typed to the minute of the dispatch, it is taken as the dispatch's moment.
        typed = {"delivered_at": "2026-11-23T14:00", "utc_offset": "+08:00"}
        assert staff.submit(detail, typed, action=f"{detail}/deliver").status == 302
        delivered = site.shipments.get_shipment(shipment["id"])
        assert delivered["delivered_at"] == delivered["dispatched_at"]

    def test_cancelling_needs_a_reason(self, site: Site, staff: PageClient) -> None:
        shipment = planned_shipment(site)
        detail = f"/shipments/{shipment['id']}"
        assert staff.submit(detail, {"reason": ""}, action=f"{detail}/cancel").status == 422
        reply = staff.submit(detail, {"reason": "job closed"}, action=f"{detail}/cancel")
        assert reply.status == 302
        assert site.shipments.get_shipment(shipment["id"])["status"] == "cancelled"

    def test_a_refused_form_reloaded_leads_back_to_the_shipment(
        self, site: Site, staff: PageClient
    ) -> None:
        _, detail = on_its_way(site)
        refused = staff.submit(
            detail, {"delivered_at": "2027-01-01T10:00"}, action=f"{detail}/deliver"
        )
        assert refused.status == 422
        # The browser's address is now the form's: reloading it, or the dispatch form
        # of a shipment already on its way, is the shipment's page.
        for address in (f"{detail}/deliver", f"{detail}/cancel", f"{detail}/dispatch"):
            reply = staff.get(address)
            assert (reply.status, reply.location) == (302, detail), address
        page = staff.get(detail)
        assert "This shipment is in transit" in page.body_text

    def test_a_cancel_too_late_says_why(self, site: Site, staff: PageClient) -> None:
        shipment = planned_shipment(site)
        detail = f"/shipments/{shipment['id']}"
        token = csrf_token(staff.get(detail).html)  # the page as it was, cancel form shown
        site.shipments.dispatch(shipment["id"], {"mode": "hand_carry"})  # someone else
        reply = staff.post(f"{detail}/cancel", {"csrf_token": token, "reason": "job closed"})
        assert reply.status == 409
        assert "in_transit" in reply.body_text and "only when planned" in reply.body_text
        assert site.shipments.get_shipment(shipment["id"])["status"] == "in_transit"


class TestPlanByHand:
    def test_a_transfer_between_warehouses(self, site: Site, staff: PageClient) -> None:
        reply = staff.submit(
            "/shipments/new",
            {
                "origin": "CDU",
                "mode": "courier",
                "destination.warehouse": "SHA",
                "lines.0.part_number": "GEL-250",
                "lines.0.quantity": "5",
            },
        )
        assert reply.status == 302, reply.body_text
        assert "Shipment planned from CDU: 5 × GEL-250." in staff.get(reply.location).body_text
        # On its way, it links to its ETA and scans, as a job's shipment does to its job.
        detail = reply.location or ""
        assert staff.submit(f"{detail}/dispatch", {"mode": "courier"}).status == 302
        tracked = f"/tracking/shipments/{detail.rsplit('/', 1)[1]}"
        assert f'href="{tracked}">ETA and scans' in staff.get(detail).html
        wait_until(
            lambda: staff.get(tracked).status == 200, message="tracking to hear of the transfer"
        )

    def test_a_transfer_names_the_units_of_a_serialized_part(
        self, site: Site, staff: PageClient
    ) -> None:
        form = {
            "origin": "SHA",
            "mode": "courier",
            "destination.warehouse": "CDU",
            "lines.0.part_number": "XRT-2000",
            "lines.0.quantity": "1",
            "lines.0.serials": "XRT-S-1, XRT-S-9",
        }
        reply = staff.submit("/shipments/new", form)
        assert reply.status == 422
        assert "2 serials for 1" in reply.text("main")
        assert reply.value("lines.0.serials") == "XRT-S-1, XRT-S-9"
        reply = staff.submit("/shipments/new", {**form, "lines.0.serials": "XRT-S-1"})
        assert reply.status == 302, reply.body_text
        assert "XRT-S-1" in staff.get(reply.location).text("main")

    def test_a_transfer_of_more_than_the_shelf_holds_says_so_on_its_page(
        self, site: Site, staff: PageClient
    ) -> None:
        reply = staff.submit(
            "/shipments/new",
            {
                "origin": "CDU",
                "mode": "courier",
                "destination.warehouse": "SHA",
                "lines.0.part_number": "GEL-250",
                "lines.0.quantity": "5000",
            },
        )
        assert reply.status == 302, reply.body_text
        detail = reply.location or ""
        reply = staff.submit(f"{detail}/dispatch", {"mode": "courier"})
        assert reply.status == 302, reply.body_text
        # Said at the top of the page, not only in its history below.
        wait_until(
            lambda: "Inventory issued no GEL-250 from CDU" in staff.get(detail).body_text,
            message="the shipment's page to say that nothing left the shelf",
        )

    def test_a_line_is_required_and_values_kept(self, site: Site, staff: PageClient) -> None:
        reply = staff.submit(
            "/shipments/new",
            {
                "origin": "CDU",
                "mode": "courier",
                "destination.site": "Ganzi County Hospital",
                "destination.region": "sichuan",
            },
        )
        assert reply.status == 422
        assert "lines" in reply.text("main")
        assert reply.value("destination.site") == "Ganzi County Hospital"

    def test_an_engineer_may_not_plan(self, site: Site) -> None:
        assert site.client("engineer").get("/shipments/new").status == 403
