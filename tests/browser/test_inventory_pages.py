"""Inventory's pages over HTTP: every form keeps what was typed and says what is
wrong next to the field; a success is flashed and shows in the numbers."""

from __future__ import annotations

from tests.browser.conftest import Site
from tests.browser.pageclient import PageClient

RESERVATION = {
    "job_id": "JOB-7",
    "part_number": "XRT-2000",
    "quantity": "1",
    "priority": "machine_down",
    "required_by": "2026-11-26T18:00",
    "utc_offset": "+08:00",
    "owner": "li.wei",
    "site.name": "Ganzi County Hospital",
    "site.region": "sichuan",
}


def on_hand(site: Site, part: str, warehouse: str) -> int:
    rows = site.inventory.list_stock(part_number=part, warehouse=warehouse).items
    return rows[0]["on_hand"] if rows else 0


class TestStockOverview:
    def test_lists_every_warehouse_and_marks_low_stock(self, site: Site) -> None:
        page = site.client("auditor").get("/inventory/stock")
        assert page.status == 200
        text = page.body_text
        assert "XRT-2000" in text and "SHA" in text
        assert "GEL-250" in text and "CDU" in text
        # 12 gels against a reorder point of 20: low, said in words.
        assert "1 line is at or below the reorder point" in text
        assert 'class="low"' in page.html

    def test_low_stock_is_counted_on_every_page(self, site: Site) -> None:
        """Fifty-five depots each with one gel against a reorder point of 20: with CDU's
        twelve, 56 low lines over two pages, and each page says so."""
        for n in range(55):
            code = f"W{n:02d}"
            site.inventory.create_warehouse(
                {"code": code, "name": f"Depot {n}", "region": "sichuan", "kind": "regional"}
            )
            site.inventory.receive_stock(
                {"warehouse": code, "part_number": "GEL-250", "quantity": 1}
            )
        viewer = site.client("auditor")
        first, second = (viewer.get("/inventory/stock", page=n).body_text for n in (1, 2))
        assert "56 lines are at or below the reorder point (50 on this page)" in first
        assert "56 lines are at or below the reorder point (6 on this page)" in second

    def test_filters_by_part_and_warehouse(self, site: Site) -> None:
        page = site.client("auditor").get("/inventory/stock", part_number="GEL-250")
        assert "GEL-250" in page.text("main")
        assert "1 stock line of GEL-250" in page.body_text
        page = site.client("auditor").get("/inventory/stock", warehouse="SHA")
        assert "1 stock line at SHA" in page.body_text

    def test_any_page_number_is_a_page(self, site: Site) -> None:
        viewer = site.client("auditor")
        for path in ("/inventory/stock", "/inventory/reservations", "/inventory/movements"):
            for number in ("99999999999999999999", "9223372036854775807", "-3", "x"):
                assert viewer.get(path, page=number).status == 200, (path, number)
        assert (
            site.client("dispatcher").get("/shipments/", page="99999999999999999999").status == 200
        )

    def test_a_malformed_filter_is_said_not_ignored(self, site: Site) -> None:
        page = site.client("auditor").get("/inventory/stock", part_number="no spaces please")
        assert page.status == 422
        assert "part number" in page.body_text


class TestReceive:
    def test_receiving_a_tube_adds_the_unit_and_flashes(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit(
            "/inventory/receipts/new",
            {
                "warehouse": "CDU",
                "part_number": "XRT-2000",
                "quantity": "1",
                "serials": "XRT-C-9\n",
                "reference": "PO-1",
            },
        )
        assert reply.status == 302
        page = client.get(reply.location)
        assert "Received 1 × XRT-2000 at CDU (serials XRT-C-9)" in page.body_text
        assert on_hand(site, "XRT-2000", "CDU") == 1
        assert site.inventory.get_unit("XRT-C-9")["status"] == "available"

    def test_a_large_receipt_names_a_few_serials_in_a_cookie_a_browser_keeps(
        self, site: Site
    ) -> None:
        client = site.client("dispatcher")
        serials = [f"XRT-LONG-SERIAL-NUMBER-{i:04d}" for i in range(200)]
        receipt = {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": "200"}
        reply = client.submit("/inventory/receipts/new", {**receipt, "serials": "\n".join(serials)})
        assert reply.status == 302
        # Browsers drop a cookie over 4 KB: the flash rides in the session cookie.
        assert len(client.cookie("partsflow_session").value) < 4096
        page = client.get(reply.location)
        assert f"{serials[9]} and 190 more)" in page.body_text
        assert on_hand(site, "XRT-2000", "CDU") == 200

    def test_a_bad_quantity_is_shown_next_to_it_and_nothing_is_lost(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/receipts/new",
            {"warehouse": "CDU", "part_number": "GEL-250", "quantity": "0", "reference": "PO-2"},
        )
        assert reply.status == 422
        assert reply.text("quantity-error")
        assert reply.value("quantity") == "0"
        assert reply.value("part_number") == "GEL-250"
        assert reply.value("warehouse") == "CDU"
        assert reply.value("reference") == "PO-2"
        assert on_hand(site, "GEL-250", "CDU") == 12

    def test_missing_serials_are_asked_for_next_to_the_serials(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/receipts/new",
            {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": "2", "serials": "A-1"},
        )
        assert reply.status == 422
        assert "serialized" in reply.text("serials-error")
        assert reply.value("serials") == "A-1"

    def test_an_unknown_part_is_said_next_to_the_part(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/receipts/new",
            {"warehouse": "CDU", "part_number": "NOPE-1", "quantity": "1"},
        )
        assert reply.status == 422
        assert "unknown part NOPE-1" in reply.text("part_number-error")

    def test_a_known_serial_is_refused_on_the_form(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/receipts/new",
            {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": "1", "serials": "XRT-S-1"},
        )
        assert reply.status == 409
        assert "XRT-S-1" in reply.text("main")
        assert on_hand(site, "XRT-2000", "CDU") == 0


class TestAdjust:
    def test_a_count_is_corrected_with_its_reason_in_the_ledger(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit(
            "/inventory/adjustments/new",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": "-2", "reason": "damaged"},
        )
        assert reply.status == 302
        assert on_hand(site, "GEL-250", "CDU") == 10
        ledger = client.get("/inventory/movements", part_number="GEL-250")
        assert "damaged" in ledger.body_text

    def test_going_below_zero_is_refused_with_values_kept(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/adjustments/new",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": "-50", "reason": "count"},
        )
        assert reply.status == 409
        assert "below" in reply.text("main")
        assert reply.value("delta") == "-50"
        assert reply.value("reason") == "count"

    def test_a_reason_is_required(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/adjustments/new",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": "1", "reason": ""},
        )
        assert reply.status == 422
        assert reply.text("reason-error")


class TestReserve:
    def test_a_reservation_is_confirmed_and_shown(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit("/inventory/reservations/new", dict(RESERVATION, warehouse="SHA"))
        assert reply.status == 302
        page = client.get(reply.location)
        assert "Reserved 1 × XRT-2000 at SHA for JOB-7 (serials XRT-S-1)" in page.body_text
        (reservation,) = site.inventory.list_reservations(job_id="JOB-7").items
        assert reservation["status"] == "confirmed"
        # 18:00 at UTC+08:00 is 10:00 UTC.
        assert reservation["required_by"].isoformat() == "2026-11-26T10:00:00+00:00"

    def test_a_job_given_another_site_or_owner_is_said_so(self, site: Site) -> None:
        client = site.client("dispatcher")
        assert client.submit("/inventory/reservations/new", dict(RESERVATION)).status == 302
        site.inventory.receive_stock({"warehouse": "SHA", "part_number": "GEL-250", "quantity": 9})
        elsewhere = dict(
            RESERVATION,
            part_number="GEL-250",
            owner="zhang.min",
            **{"site.name": "Kashgar Hospital", "site.region": "xinjiang"},
        )
        reply = client.submit("/inventory/reservations/new", elsewhere)
        assert reply.status == 302
        page = client.get(reply.location).text("main")
        assert "Reserved 1 × GEL-250" in page
        assert (
            "JOB-7's other parts go to Ganzi County Hospital (sichuan); this one goes to "
            "Kashgar Hospital (xinjiang)." in page
        )
        assert "JOB-7 is now held by zhang.min (before: li.wei); its alerts go to them." in page
        # The same again says nothing more.
        reply = client.submit("/inventory/reservations/new", elsewhere)
        page = client.get(reply.location).text("main")
        assert "Reserved 1 × GEL-250" in page and "other parts" not in page

    def test_none_at_the_chosen_warehouse_offers_the_others(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit("/inventory/reservations/new", dict(RESERVATION, warehouse="CDU"))
        assert reply.status == 409
        assert "not enough XRT-2000" in reply.text("main")
        alternatives = reply.text("alternatives")
        assert "SHA: 1 available" in alternatives
        assert "after the required-by" not in alternatives
        assert reply.value("job_id") == "JOB-7"
        # Needed sooner than SHA can deliver: the page says so beside it.
        sooner = client.submit(
            "/inventory/reservations/new",
            dict(RESERVATION, warehouse="CDU", required_by="2026-11-23T20:00"),
        )
        assert "SHA: 1 available" in sooner.text("alternatives")
        assert "after the required-by" in sooner.text("alternatives")
        assert reply.value("site.name") == "Ganzi County Hospital"
        taken = client.submit(
            "/inventory/reservations/new",
            dict(RESERVATION, warehouse="CDU", use_warehouse="SHA"),
        )
        assert taken.status == 302
        (reservation,) = site.inventory.list_reservations(job_id="JOB-7").items
        assert reservation["warehouse"] == "SHA"

    def test_machine_down_may_take_a_routine_reservation(self, site: Site) -> None:
        routine = site.inventory.reserve_part(
            {
                "job_id": "PM-1",
                "part_number": "XRT-2000",
                "quantity": 1,
                "required_by": site.clock.now().replace(month=12),
                "priority": "routine",
                "owner": "wang.fang",
                "site": {"name": "Chengdu West", "region": "sichuan"},
            }
        )
        client = site.client("dispatcher")
        refused = client.submit("/inventory/reservations/new", RESERVATION)
        assert refused.status == 409
        assert "PM-1" in refused.text("alternatives")
        # Asked first of a warehouse with none, as the refusal left the form.
        refused = client.submit("/inventory/reservations/new", dict(RESERVATION, warehouse="CDU"))
        assert refused.status == 409 and "PM-1" in refused.text("alternatives")
        # Sent with none checked, it says so, and the choice stays on offer.
        unchecked = client.submit(
            "/inventory/reservations/new", dict(RESERVATION, warehouse="CDU", action="preempt")
        )
        assert unchecked.status == 409 and "PM-1" in unchecked.text("alternatives")
        assert "Nothing was taken: check the reservations to take first." in unchecked.body_text
        taken = client.submit(
            "/inventory/reservations/new",
            dict(RESERVATION, warehouse="CDU", preempt=routine["id"], action="preempt"),
        )
        assert taken.status == 302
        assert site.inventory.get_reservation(routine["id"])["status"] == "preempted"
        (mine,) = site.inventory.list_reservations(job_id="JOB-7").items
        assert mine["warehouse"] == routine["warehouse"]
        page = client.get(taken.location)
        assert "it takes the reservation of PM-1" in page.body_text

    def test_a_time_and_a_site_are_required(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/reservations/new",
            dict(RESERVATION, required_by="", **{"site.region": ""}),
        )
        assert reply.status == 422
        assert reply.text("required_by-error")
        assert reply.text("site.region-error")
        assert reply.value("owner") == "li.wei"

    def test_released_stock_is_available_again(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit("/inventory/reservations/new", dict(RESERVATION, warehouse="SHA"))
        detail = reply.location
        released = client.submit(detail, {"reason": "fixed remotely"}, action=f"{detail}/release")
        assert released.status == 302
        page = client.get(released.location)
        assert "Released 1 × XRT-2000 at SHA" in page.body_text
        assert "fixed remotely" in page.body_text
        stock = site.inventory.list_stock(part_number="XRT-2000", warehouse="SHA").items[0]
        assert stock["available"] == 1

    def test_releasing_twice_is_refused_on_the_page(self, site: Site) -> None:
        client = site.client("dispatcher")
        detail = client.submit(
            "/inventory/reservations/new", dict(RESERVATION, warehouse="SHA")
        ).location
        client.submit(detail, {}, action=f"{detail}/release")
        again = client.submit(detail, {}, action=f"{detail}/release")
        assert again.status == 409
        assert "only a confirmed reservation can be released" in again.body_text


class TestLedgerAndUnits:
    def test_a_units_history_follows_it(self, site: Site) -> None:
        client = site.client("auditor")
        page = client.get("/inventory/units/XRT-S-1")
        assert page.status == 200
        assert "receipt" in page.body_text and "SHA" in page.body_text
        assert client.get("/inventory/units", serial="XRT-S-1").location.endswith(
            "/inventory/units/XRT-S-1"
        )

    def test_an_unknown_unit_is_a_404_page(self, site: Site) -> None:
        page = site.client("auditor").get("/inventory/units/NOPE")
        assert page.status == 404
        assert "no unit with serial NOPE" in page.body_text

    def test_the_ledger_lists_movements(self, site: Site) -> None:
        page = site.client("auditor").get("/inventory/movements", warehouse="CDU")
        assert "GEL-250" in page.body_text
        assert "XRT-2000" not in page.text("main").split("ledger line")[1]


class TestCatalogue:
    def test_a_warehouse_is_added_and_listed(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit(
            "/inventory/warehouses",
            {"code": "VAN-07", "name": "Li's van", "region": "sichuan", "kind": "van"},
        )
        assert reply.status == 302
        assert "VAN-07" in client.get("/inventory/warehouses").body_text

    def test_a_taken_code_is_refused_with_the_values_kept(self, site: Site) -> None:
        reply = site.client("dispatcher").submit(
            "/inventory/warehouses",
            {"code": "CDU", "name": "Second", "region": "sichuan", "kind": "depot"},
        )
        assert reply.status == 409
        assert reply.value("name") == "Second"

    def test_a_viewer_sees_the_parts_but_may_not_add_one(self, site: Site) -> None:
        viewer = site.client("auditor")
        assert "XRT-2000" in viewer.get("/inventory/parts").body_text
        reply = viewer.submit(
            "/inventory/parts",
            {"part_number": "NEW-1", "description": "x", "serialized": "y"},
        )
        assert reply.status == 403

    def test_a_stranger_cannot_post_a_form(self, site: Site) -> None:
        reply = PageClient(site.system.wsgi).submit(
            "/login", {"part_number": "NEW-1"}, action="/inventory/parts"
        )
        assert reply.status == 302
        assert reply.location.startswith("/login")
