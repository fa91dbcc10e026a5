"""Tracking's pages over HTTP: the start page, the control tower with acknowledge,
scans entered by hand, and the engineer's job page with its texted link."""

from __future__ import annotations

import re
from datetime import timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

from services.tracking.eta import times_told_in
from tests.browser.conftest import PASSWORD, Site
from tests.browser.pageclient import PageClient
from tests.conftest import wait_until


def dispatched_tube(site: Site, job_id: str = "JOB-7") -> dict[str, Any]:
    """A job's tube on the road, by hand, past two checkpoints, tracking aware of it."""
    now = site.clock.now()
    site.inventory.reserve_part(
        {
            "job_id": job_id,
            "part_number": "XRT-2000",
            "quantity": 1,
            "required_by": now + timedelta(hours=30),
            "priority": "machine_down",
            "owner": "li.wei",
            "site": {"name": "Ganzi County Hospital", "region": "sichuan"},
        }
    )
    shipment = wait_until(
        lambda: next(iter(site.shipments.list_shipments(job_id=job_id).items), None),
        message="the shipment to be planned",
    )
    site.shipments.dispatch(
        shipment["id"],
        {
            "mode": "hand_carry",
            "checkpoints": [
                {"name": "Kangding", "due_at": now + timedelta(hours=2)},
                {"name": "Ganzi", "due_at": now + timedelta(hours=12)},
            ],
        },
    )
    wait_until(
        lambda: (
            site.tracking.control_tower()["jobs"]
            and site.tracking.job_view(job_id)["parts"][0]["shipment_status"] == "in_transit"
        ),
        message="tracking to follow the shipment",
    )
    return shipment


def low_on_gel(site: Site) -> dict[str, Any]:
    """Gel at Shanghai drops below its reorder point: tracking raises low stock."""
    site.inventory.receive_stock({"warehouse": "SHA", "part_number": "GEL-250", "quantity": 25})
    site.inventory.adjust_stock(
        {"warehouse": "SHA", "part_number": "GEL-250", "delta": -10, "reason": "count"}
    )
    (alert,) = wait_until(
        lambda: [
            a for a in site.tracking.control_tower()["alerts"] if a["subject"] == "GEL-250@SHA"
        ],
        message="the low-stock alert",
    )
    return alert


def scan_form_an_hour_on(site: Site) -> tuple[dict[str, Any], str]:
    """A tube an hour on the road, and the address of its scan form."""
    shipment = dispatched_tube(site)
    site.clock.advance(timedelta(hours=1))
    return shipment, f"/tracking/shipments/{shipment['id']}/scans/new"


def enter_checkpoint(
    staff: PageClient, form: str, name: str, occurred_at: str, utc_offset: str = "+00:00"
) -> Any:
    """Logistics staff enter a checkpoint scan by hand on a shipment's scan form."""
    scan = {"kind": "checkpoint", "checkpoint": name, "occurred_at": occurred_at}
    return staff.submit(form, {**scan, "utc_offset": utc_offset})


@pytest.fixture
def staff(site: Site) -> PageClient:
    return site.client("dispatcher")


class TestAttention:
    def test_the_start_page_lists_low_stock_and_alerts(self, site: Site) -> None:
        low_on_gel(site)
        page = site.client("auditor").get("/")
        assert page.status == 200
        assert "Low stock: 15 GEL-250 available at SHA" in page.body_text
        assert "Every open job is on track." in page.body_text
        assert "Warning alerts 0 None open besides low stock (2)." in page.body_text

    def test_an_engineer_finds_the_jobs_they_hold_first(self, site: Site) -> None:
        dispatched_tube(site, "JOB-7")  # li.wei's
        site.inventory.reserve_part(
            {
                "job_id": "JOB-9",
                "part_number": "GEL-250",
                "quantity": 1,
                "required_by": site.clock.now() + timedelta(days=2),
                "priority": "urgent",
                "owner": "Engineer",
                "site": {"name": "Litang County Hospital", "region": "sichuan"},
            }
        )
        wait_until(
            lambda: len(site.tracking.control_tower()["jobs"]) == 2,
            message="tracking to know both jobs",
        )
        mine = site.client("engineer").get("/").text("your-jobs-list")
        assert "JOB-9 at Litang County Hospital" in mine and "JOB-7" not in mine
        # Its parts and when they come, without opening the job (story 3).
        (part,) = site.tracking.job_view("JOB-9")["parts"]
        assert part["eta"] is not None
        assert "1 × GEL-250: ETA" in mine
        assert "Your jobs" not in site.client("auditor").get("/").text("main")

    def test_a_stranger_is_sent_to_sign_in(self, site: Site) -> None:
        assert site.client().get("/").location == "/login?next=/"


class TestControlTower:
    def test_a_lost_part_is_said_to_be_lost_beside_its_replacement(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = dispatched_tube(site)
        site.tracking.record_event(
            {
                "shipment_id": shipment["id"],
                "kind": "lost",
                "occurred_at": site.clock.now(),
                "note": "bus searched, no box",
            },
            source="test",
        )
        wait_until(
            lambda: any(
                p["reservation_status"] == "lost" for p in site.tracking.job_view("JOB-7")["parts"]
            ),
            message="inventory to mark the tube's reservation lost",
        )
        tower = staff.get("/tracking/control-tower")
        assert "1 × XRT-2000 (lost)" in tower.body_text

    def test_a_jobs_trouble_comes_before_stock_running_low(self, site: Site) -> None:
        """A machine-down job's overdue checkpoint is listed above an older low-stock
        warning of the same severity."""
        low = low_on_gel(site)
        dispatched_tube(site)
        site.clock.advance(timedelta(hours=3))
        site.tracking.scan()
        alerts = site.tracking.control_tower()["alerts"]
        kinds = [a["kind"] for a in alerts if a["severity"] == "warning"]
        assert kinds.index("checkpoint_overdue") < kinds.index("low_stock"), kinds
        assert low["id"] in [a["id"] for a in alerts]

    def test_an_alert_is_acknowledged_and_stays_listed(self, site: Site, staff: PageClient) -> None:
        alert = low_on_gel(site)
        tower = staff.get("/tracking/control-tower")
        assert alert["message"] in tower.body_text
        assert f'aria-label="Note on acknowledging: {alert["message"]}"' in tower.html
        reply = staff.submit(
            "/tracking/control-tower",
            {"note": "transfer from CDU booked"},
            action=f"/tracking/alerts/{alert['id']}/acknowledge?next=/",
        )
        assert reply.status == 302
        assert reply.location == "/"
        page = staff.get("/")
        assert f"Acknowledged: {alert['message']}" in page.body_text
        acknowledged = site.tracking.get_alert(alert["id"])
        assert (acknowledged["status"], acknowledged["note"]) == (
            "acknowledged",
            "transfer from CDU booked",
        )
        tower = staff.get("/tracking/control-tower")
        assert "“transfer from CDU booked”" in tower.body_text
        # Still listed until resolved, and counted apart from those nobody has seen.
        waiting = len(site.tracking.list_alerts(status="open").items)
        assert f"({waiting} not acknowledged)" in tower.body_text
        assert "acknowledged" in staff.get("/tracking/control-tower").body_text

    def test_an_alerts_times_are_told_in_the_readers_zone(
        self, site: Site, staff: PageClient
    ) -> None:
        dispatched_tube(site)
        site.clock.advance(timedelta(hours=3))
        site.tracking.scan()
        (alert,) = site.tracking.list_alerts(status="open", kind="checkpoint_overdue").items
        assert "was due on 23 Nov 08:00 UTC" in alert["message"]
        staff.submit("/", {"utc_offset": "+08:00"}, action="/preferences/time-zone?next=/")
        tower = staff.get("/tracking/control-tower")
        assert "was due on 23 Nov 16:00 UTC+08:00" in tower.body_text
        assert alert["message"] not in tower.body_text
        reply = staff.submit(
            "/tracking/control-tower", {}, action=f"/tracking/alerts/{alert['id']}/acknowledge"
        )
        flash = staff.get(reply.location).text("main")
        assert "Acknowledged: " in flash and "was due on 23 Nov 16:00 UTC+08:00" in flash

    def test_a_viewer_may_not_acknowledge(self, site: Site) -> None:
        alert = low_on_gel(site)
        viewer = site.client("auditor")
        reply = viewer.submit(
            "/tracking/control-tower", {}, action=f"/tracking/alerts/{alert['id']}/acknowledge"
        )
        assert reply.status == 403
        assert site.tracking.get_alert(alert["id"])["status"] == "open"

    def test_the_open_jobs_are_listed_with_their_risk(self, site: Site, staff: PageClient) -> None:
        dispatched_tube(site)
        page = staff.get("/tracking/control-tower")
        assert "JOB-7" in page.body_text
        assert 'data-refresh-seconds="60"' in page.html


class TestScans:
    def test_a_scan_entered_by_hand_moves_the_route(self, site: Site, staff: PageClient) -> None:
        shipment, form = scan_form_an_hour_on(site)
        assert staff.get(form).value("checkpoint") == "Kangding"
        reply = enter_checkpoint(staff, form, "Kangding", "2026-11-23T06:50")
        assert reply.status == 302
        page = staff.get(reply.location)
        assert "Recorded checkpoint at Kangding." in page.body_text
        assert "Passed Kangding" in page.body_text
        events = site.tracking.shipment_events(shipment["id"])
        assert [(e["kind"], e["checkpoint"], e["source"]) for e in events] == [
            ("checkpoint", "Kangding", "dispatcher")
        ]

    def test_a_checkpoint_gone_by_unscanned_is_shown_as_not_scanned(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = dispatched_tube(site)
        site.clock.advance(timedelta(hours=11))
        form = f"/tracking/shipments/{shipment['id']}/scans/new"
        assert staff.get(form).value("checkpoint") == "Kangding"
        reply = enter_checkpoint(staff, form, "Ganzi", "2026-11-23T16:50")
        assert reply.status == 302
        page = staff.get(reply.location)
        assert "Not scanned Kangding" in page.body_text
        assert "Passed Ganzi" in page.body_text
        assert "Overdue" not in page.body_text
        # No checkpoint is ahead any more: the form names none.
        assert not staff.get(form).value("checkpoint")

    def test_a_scan_entered_in_new_zealand_summer_time(self, site: Site, staff: PageClient) -> None:
        shipment, form = scan_form_an_hour_on(site)
        assert '<option value="+13:00">' in staff.get(form).html
        reply = enter_checkpoint(staff, form, "Kangding", "2026-11-23T19:50", "+13:00")
        assert reply.status == 302
        (event,) = site.tracking.shipment_events(shipment["id"])
        assert event["occurred_at"].isoformat() == "2026-11-23T06:50:00+00:00"

    def test_a_scan_before_the_dispatch_is_taken_for_a_slip_of_the_zone(
        self, site: Site, staff: PageClient
    ) -> None:
        # Dispatched at 06:00 UTC; 07:50 typed as UTC+08:00 is 23:50 the day before.
        shipment, form = scan_form_an_hour_on(site)
        reply = enter_checkpoint(staff, form, "Kangding", "2026-11-23T07:50", "+08:00")
        assert reply.status == 422
        refused = reply.text("main")
        assert "before the shipment was dispatched (2026-11-23 14:00 UTC+08:00)" in refused
        assert site.tracking.shipment_events(shipment["id"]) == []
        assert enter_checkpoint(staff, form, "Kangding", "2026-11-23T06:50").status == 302

    def test_a_scan_in_the_minute_of_the_dispatch_is_taken(
        self, site: Site, staff: PageClient
    ) -> None:
        # Dispatched at 06:00:30; the form's own time, to the minute, is 06:00.
        site.clock.advance(timedelta(seconds=30))
        shipment = dispatched_tube(site)
        form = f"/tracking/shipments/{shipment['id']}/scans/new"
        assert staff.get(form).value("occurred_at") == "2026-11-23T06:00"
        scan = {"kind": "picked_up", "occurred_at": "2026-11-23T06:00", "utc_offset": "+00:00"}
        assert staff.submit(form, scan).status == 302

    def test_a_scan_without_its_time_is_refused_with_values_kept(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment = dispatched_tube(site)
        reply = staff.submit(
            f"/tracking/shipments/{shipment['id']}/scans/new",
            {"kind": "checkpoint", "checkpoint": "Kangding", "occurred_at": "", "note": "bus"},
        )
        assert reply.status == 422
        assert reply.text("occurred_at-error")
        assert reply.value("note") == "bus"
        assert site.tracking.shipment_events(shipment["id"]) == []

    def test_a_checkpoint_not_on_the_route_is_refused_as_a_slip(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment, form = scan_form_an_hour_on(site)
        scan = {"kind": "checkpoint", "occurred_at": "2026-11-23T06:50", "utc_offset": "+00:00"}
        reply = staff.submit(form, dict(scan, checkpoint="Kangdin"))
        assert reply.status == 422
        assert "not a checkpoint of this route (Kangding, Ganzi)" in reply.text("checkpoint-error")
        assert reply.value("checkpoint") == "Kangdin"
        assert site.tracking.shipment_events(shipment["id"]) == []
        # A place off the route is welcome as the location.
        reply = staff.submit(form, dict(scan, kind="in_transit", location="Yaan bus station"))
        assert reply.status == 302
        # The name typed in small letters is the checkpoint all the same.
        reply = staff.submit(form, dict(scan, checkpoint="kangding"))
        assert reply.status == 302
        eta = site.tracking.shipment_eta(shipment["id"])
        assert eta["checkpoints"][0]["passed_at"] is not None

    def test_a_loss_entered_by_hand_says_who_reported_it(
        self, site: Site, staff: PageClient
    ) -> None:
        shipment, form = scan_form_an_hour_on(site)
        lost = {"kind": "lost", "occurred_at": "2026-11-23T06:50", "utc_offset": "+00:00"}
        reply = staff.submit(form, lost)
        assert reply.status == 422
        assert "who reported the loss" in reply.text("note-error")
        assert site.tracking.shipment_events(shipment["id"]) == []
        reply = staff.submit(form, dict(lost, note="driver: box left on the Kangding bus"))
        assert reply.status == 302
        assert [e["kind"] for e in site.tracking.shipment_events(shipment["id"])] == ["lost"]

    def test_an_engineer_may_not_enter_scans(self, site: Site) -> None:
        shipment = dispatched_tube(site)
        engineer = site.client("engineer")
        assert engineer.get(f"/tracking/shipments/{shipment['id']}/scans/new").status == 403


class TestJobPage:
    def test_shows_each_part_its_eta_range_and_reason(self, site: Site) -> None:
        dispatched_tube(site)
        page = site.client("engineer").get("/tracking/jobs/JOB-7")
        assert page.status == 200
        text = page.body_text
        assert "1 × XRT-2000" in text
        assert "ETA" in text and "between" in text
        view = site.tracking.job_view("JOB-7")
        assert view["parts"][0]["reason"] in text
        assert "Planned Kangding" in text

    def test_a_job_known_only_from_a_transfer_shows_what_is_known(self, site: Site) -> None:
        """A transfer to a warehouse planned by hand for a job no reservation named:
        its region, and no "None" where a site or owner would be."""
        site.shipments.create_shipment(
            {
                "origin": "SHA",
                "destination": {"warehouse": "CDU"},
                "mode": "courier",
                "job_id": "JOB-NEW",
                "lines": [{"part_number": "GEL-250", "quantity": 1}],
            },
            wait_for_news=True,
        )
        wait_until(
            lambda: any(j["job_id"] == "JOB-NEW" for j in site.tracking.control_tower()["jobs"]),
            message="tracking to hear of the job",
        )
        viewer = site.client("engineer")
        for path in ("/tracking/jobs/JOB-NEW", "/tracking/control-tower", "/"):
            page = viewer.get(path)
            assert page.status == 200, path
            # ("None open" is how the start page counts alerts.)
            assert not re.search(r"\bNone\b(?! open)", page.body_text), (path, page.body_text)
        assert "sichuan" in viewer.get("/tracking/jobs/JOB-NEW").body_text

    def test_a_delivered_part_says_when_it_came_not_a_range(self, site: Site) -> None:
        shipment = dispatched_tube(site)
        site.clock.advance(timedelta(hours=10))
        scanned = {"shipment_id": shipment["id"], "kind": "checkpoint", "checkpoint": "Ganzi"}
        site.tracking.record_event({**scanned, "occurred_at": site.clock.now()})
        site.shipments.deliver(shipment["id"], {"received_by": "li.wei"})
        wait_until(
            lambda: site.tracking.job_view("JOB-7")["parts"][0]["shipment_status"] == "delivered",
            message="tracking to hear of the delivery",
        )
        text = site.client("engineer").get("/tracking/jobs/JOB-7").body_text
        assert "Delivered" in text
        assert "between" not in text and "ETA" not in text
        # Delivered by the desk, not by a scan: the last scan is not where it is.
        assert "Where delivered, " in text and "checkpoint at" not in text
        text = site.client("engineer").get(f"/tracking/shipments/{shipment['id']}").body_text
        assert "Delivered" in text and "between" not in text.lower()

    def test_a_released_part_is_not_said_to_be_anywhere(self, site: Site) -> None:
        reservation = site.inventory.reserve_part(
            {
                "job_id": "JOB-8",
                "part_number": "GEL-250",
                "quantity": 2,
                "required_by": site.clock.now() + timedelta(hours=30),
                "priority": "routine",
                "owner": "li.wei",
                "site": {"name": "Ganzi County Hospital", "region": "sichuan"},
            }
        )
        site.inventory.release_reservation(reservation["id"], "fixed without it")
        wait_until(
            lambda: (
                site.tracking.job_view("JOB-8", wait_for_job=True)["parts"][0]["reservation_status"]
                == "released"
            ),
            message="tracking to hear of the release",
        )
        text = site.client("engineer").get("/tracking/jobs/JOB-8").body_text
        assert "Released: no longer on its way to this job." in text
        assert "Where" not in text and "ETA" not in text

    def test_a_work_order_number_with_slashes_has_its_page(self, site: Site) -> None:
        dispatched_tube(site, "WO/2026/1042")
        page = site.client("engineer").get("/tracking/jobs/WO/2026/1042")
        assert page.status == 200
        assert "Job WO/2026/1042" in page.body_text
        assert "1 × XRT-2000" in page.body_text

    def test_a_work_order_number_with_a_hash_keeps_its_links(self, site: Site) -> None:
        dispatched_tube(site, "WO#1234?")
        path = "/tracking/jobs/WO%231234%3F"
        link = site.client("dispatcher").get(path).value("share-link") or ""
        texted = "/" + link.split("://", 1)[1].split("/", 1)[1]
        engineer = site.client()
        page = engineer.get(texted)
        assert "Job WO#1234?" in page.body_text
        assert f'href="{texted}">reload now' in page.html
        # The zone's Apply leads back to the same page.
        reply = engineer.submit(
            texted, {"utc_offset": "+08:00"}, action=f"/preferences/time-zone?next={quote(texted)}"
        )
        assert (reply.status, reply.location) == (302, texted)
        assert f"next={quote(texted)}" in page.html
        # Without the link's key, signing in leads back to it too.
        stranger = site.client()
        sent = stranger.get(path)
        assert sent.location == f"/login?next={quote(path, safe='/')}"
        signed_in = stranger.sign_in("engineer", PASSWORD, next_path=quote(path, safe="/"))
        assert signed_in.location == path
        assert "Job WO#1234?" in stranger.get(signed_in.location).body_text

    def test_the_texted_link_opens_it_without_signing_in(self, site: Site) -> None:
        dispatched_tube(site)
        page = site.client("dispatcher").get("/tracking/jobs/JOB-7")
        link = page.value("share-link") or ""
        path = link.split("://", 1)[1].split("/", 1)[1]
        opened = site.client().get(f"/{path}")
        assert opened.status == 200
        assert "Job JOB-7" in opened.body_text
        # Kept by no shared browser or proxy, as a signed-in page is not.
        assert opened.response.headers["Cache-Control"] == "no-store"
        # The link opens no other job, nor any other page.
        other = site.client().get(f"/{path.replace('JOB-7', 'JOB-8', 1)}")
        assert other.status == 302
        assert site.client().get("/tracking/control-tower").status == 302

    def test_the_reason_tells_its_times_in_the_readers_zone_even_by_the_texted_link(
        self, site: Site
    ) -> None:
        dispatched_tube(site)
        link = site.client("dispatcher").get("/tracking/jobs/JOB-7").value("share-link") or ""
        path = "/" + link.split("://", 1)[1].split("/", 1)[1]
        engineer = site.client()
        assert "Show times in" in engineer.get(path).body_text
        reply = engineer.submit(
            path, {"utc_offset": "+08:00"}, action=f"/preferences/time-zone?next={quote(path)}"
        )
        assert (reply.status, reply.location) == (302, path)
        page = engineer.get(path)
        assert page.status == 200, page.body_text
        (part,) = site.tracking.job_view("JOB-7")["parts"]
        told_in_utc = part["reason"]
        assert " UTC" in told_in_utc  # the API's sentence
        with times_told_in(timezone(timedelta(hours=8))):
            told_there = site.tracking.job_view("JOB-7")["parts"][0]["reason"]
        assert "UTC+08:00" in told_there
        assert told_there in page.body_text and told_in_utc not in page.body_text
        # The API still tells them in UTC.
        assert site.tracking.job_view("JOB-7")["parts"][0]["reason"] == told_in_utc

    def test_only_those_who_send_parts_hand_out_the_link(self, site: Site) -> None:
        dispatched_tube(site)
        assert site.client("dispatcher").get("/tracking/jobs/JOB-7").value("share-link")
        for reader in ("engineer", "auditor"):
            page = site.client(reader).get("/tracking/jobs/JOB-7")
            assert page.status == 200
            assert "Text this page" not in page.body_text
            assert page.value("share-link") is None

    def test_a_tampered_link_leads_to_the_login_form(self, site: Site) -> None:
        dispatched_tube(site)
        stranger = site.client()
        reply = stranger.get("/tracking/jobs/JOB-7", key="forged")
        assert reply.status == 302
        assert reply.location.startswith("/login?next=")
        assert "This job link no longer opens the page" in stranger.get(reply.location).body_text
        # Sent to sign in without a link, nobody is told of one.
        reply = stranger.get("/tracking/jobs/JOB-7")
        assert "job link" not in stranger.get(reply.location).body_text

    def test_an_unknown_job_is_a_404_page(self, site: Site) -> None:
        page = site.client("engineer").get("/tracking/jobs/NOPE")
        assert page.status == 404
        assert "no job NOPE" in page.body_text
