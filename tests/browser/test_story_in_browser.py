"""The X-ray tube to the county hospital, in a real browser: a staff member receives
the tube, reserves it for the machine-down job, dispatches it by hand with its road
checkpoints, enters a checkpoint scan that came late and sees the alert in the
control tower; the engineer opens the texted job page on a phone and sees the ETA
and the reason. Screenshots of each main page are kept for the README."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Site, page_width, screenshot, seed_stock, sign_in
from tests.conftest import wait_until

# The test's clock starts at 06:00 UTC, 14:00 in Sichuan (UTC+08:00).
CHECKPOINTS = [
    ("Kangding", "2026-11-23T16:00"),
    ("Zheduo Pass", "2026-11-23T19:00"),
    ("Yajiang", "2026-11-23T23:00"),
    ("Ganzi County Hospital", "2026-11-24T03:00"),
]


@pytest.fixture
def stocked(live_site: Site) -> Site:
    seed_stock(live_site)
    wait_until(
        lambda: len(live_site.shipments.list_warehouses()) == 2,
        message="shipments to learn the warehouses",
    )
    return live_site


def reload_until(page: Any, text: str, what: str) -> None:
    """Reload a page until ``text`` shows: the services catch up through the bus."""

    def shown() -> bool:
        page.reload()
        return text in page.locator("main").inner_text()

    wait_until(shown, timeout=20, interval=0.3, message=what)


def test_the_x_ray_tube_story(stocked: Site, desk: Any, phone: Any) -> None:
    base = stocked.base_url
    sign_in(desk, stocked, "dispatcher", "/")
    # Pages start in the browser's own zone, Chengdu's.
    assert desk.locator("#footer-offset").input_value() == "+08:00"

    # A tube arrives at the Chengdu depot.
    desk.goto(f"{base}/inventory/receipts/new")
    desk.get_by_label("Warehouse").select_option("CDU")
    desk.get_by_label("Part number").fill("XRT-2000")
    desk.get_by_label("Quantity").fill("1")
    desk.get_by_label("Serial numbers").fill("XRT-C-7")
    desk.get_by_label("Reference").fill("PO-2211")
    desk.get_by_role("button", name="Receive").click()
    assert "Received 1 × XRT-2000 at CDU" in desk.locator(".flash-success").inner_text()

    # The CT scanner at Ganzi is down: the tube is reserved for its job.
    desk.goto(f"{base}/inventory/reservations/new?part_number=XRT-2000&warehouse=CDU")
    desk.get_by_label("Job", exact=True).fill("JOB-1042")
    desk.get_by_label("Priority").select_option("machine_down")
    desk.get_by_label("Required by").fill("2026-11-24T04:00")
    desk.get_by_label("Times are in").select_option("+08:00")
    desk.get_by_label("Owner (who holds the job)").fill("li.wei")
    desk.get_by_label("Site (hospital)").fill("Ganzi County Hospital")
    desk.get_by_label("Site region").fill("sichuan")
    desk.get_by_role("button", name="Reserve", exact=True).click()
    flash = desk.locator(".flash-success").inner_text()
    assert "Reserved 1 × XRT-2000 at CDU for JOB-1042 (serials XRT-C-7)" in flash

    # Its shipment is planned by itself; the engineer carries it by hand.
    desk.goto(f"{base}/shipments/?job_id=JOB-1042")
    reload_until(desk, "planned", "the reservation's shipment to be planned")
    desk.get_by_role("link", name="JOB-1042").click()
    desk.get_by_role("link", name="Dispatch").click()
    desk.get_by_label("Mode").select_option("hand_carry")
    desk.get_by_role("button", name="More checkpoint rows").click()
    for row, (name, due) in enumerate(CHECKPOINTS):
        desk.locator(f'[name="checkpoints.{row}.name"]').fill(name)
        desk.locator(f'[name="checkpoints.{row}.due_at"]').fill(due)
    screenshot(desk, "dispatch")
    desk.get_by_role("button", name="Dispatch", exact=True).last.click()
    assert (
        "Dispatched hand-carry, 4 checkpoints to pass."
        in desk.locator(".flash-success").inner_text()
    )
    screenshot(desk, "shipment")

    # Three and a half hours later word comes that Kangding was passed at 17:30: late.
    stocked.clock.advance(timedelta(hours=3, minutes=30))
    shipment_page = desk.url
    reload_until(desk, "Enter a checkpoint scan", "the shipment to be in transit")
    desk.get_by_role("link", name="Enter a checkpoint scan").click()
    assert desk.get_by_label("Checkpoint").input_value() == "Kangding"
    desk.get_by_label("What happened").select_option("checkpoint")
    desk.get_by_label("When").fill("2026-11-23T17:30")
    desk.get_by_label("Times are in").select_option("+08:00")
    desk.get_by_label("Location").fill("Kangding bus station")
    desk.get_by_role("button", name="Record the scan").click()
    assert "Recorded checkpoint at Kangding." in desk.locator(".flash-success").inner_text()
    assert "Kangding" in desk.locator(".reason").inner_text()

    # The control tower shows the alert, naming the job and its owner.
    desk.goto(f"{base}/tracking/control-tower")
    reload_until(desk, "Job JOB-1042 (owner li.wei)", "the job's alert")
    alerts = desk.locator("ul[aria-labelledby='open-alerts']")
    assert "Job JOB-1042 (owner li.wei)" in alerts.inner_text()
    assert "JOB-1042" in desk.locator("table").inner_text()
    screenshot(desk, "control-tower")
    desk.goto(f"{base}/")
    assert "JOB-1042" in desk.locator("#jobs-at-risk + ul").inner_text()
    screenshot(desk, "attention")

    # The dispatcher texts the job page to the engineer, who opens it on a phone.
    desk.goto(f"{base}/tracking/jobs/JOB-1042")
    link = desk.get_by_label("Link").input_value()
    assert link.startswith(f"{base}/tracking/jobs/JOB-1042?key=")
    phone.goto(link)
    # The phone's own zone is applied at once: the page comes back in UTC+08:00.
    expect(phone.locator("section.part .eta").first).to_contain_text("UTC+08:00")
    assert phone.get_by_role("heading", level=1).inner_text() == "Job JOB-1042"
    part = phone.locator("section.part").first
    assert "ETA" in part.locator(".eta").inner_text()
    assert "between" in part.inner_text()
    assert "Kangding" in part.locator(".reason").inner_text()
    assert phone.locator("#footer-offset").input_value() == "+08:00"
    assert "Passed Kangding" in part.locator("ol.timeline").inner_text()
    assert "Planned Ganzi County Hospital" in part.locator("ol.timeline").inner_text()
    assert page_width(phone) <= 390
    screenshot(phone, "job-on-phone")
    # The page reloads itself, and only from the site's own script.
    assert phone.locator("script[src$='refresh.js']").count() == 1
    assert phone.locator("[data-refresh-seconds]").count() == 1
    desk.goto(shipment_page)
