"""Logistics staff at work in a real browser (headless Chromium): signing in with the
keyboard, receiving and reserving with the forms, pages that fit a phone and work
without JavaScript. The tests keep screenshots of the main pages for the README."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Site, page_width, screenshot, seed_stock, sign_in
from tests.conftest import wait_until


@pytest.fixture
def stocked(live_site: Site) -> Site:
    seed_stock(live_site)
    wait_until(
        lambda: len(live_site.shipments.list_warehouses()) == 2,
        message="shipments to learn the warehouses",
    )
    return live_site


def test_signing_in_with_the_keyboard_alone(stocked: Site, desk: Any) -> None:
    desk.goto(f"{stocked.base_url}/inventory/stock")
    assert desk.url.startswith(f"{stocked.base_url}/login")
    screenshot(desk, "login")
    desk.keyboard.press("Tab")
    assert desk.evaluate("document.activeElement.textContent") == "Skip to content"
    desk.get_by_label("Name").focus()
    desk.keyboard.type("dispatcher")
    desk.keyboard.press("Tab")
    desk.keyboard.type(stocked.passwords["dispatcher"])
    desk.keyboard.press("Enter")
    desk.wait_for_url(f"{stocked.base_url}/inventory/stock")
    assert desk.get_by_role("heading", level=1).inner_text() == "Stock across warehouses"


def test_receiving_a_tube_and_seeing_the_stock(stocked: Site, desk: Any) -> None:
    sign_in(desk, stocked, "dispatcher", "/inventory/receipts/new")
    desk.get_by_label("Warehouse").select_option("CDU")
    desk.get_by_label("Part number").fill("XRT-2000")
    desk.get_by_label("Quantity").fill("2")
    desk.get_by_label("Serial numbers").fill("XRT-C-1")
    desk.get_by_role("button", name="Receive").click()
    # One serial for two units: said next to the serials, nothing typed is lost.
    error = desk.locator("#serials-error")
    assert "serialized" in error.inner_text()
    assert desk.get_by_label("Serial numbers").input_value() == "XRT-C-1"
    assert desk.get_by_label("Serial numbers").get_attribute("aria-invalid") == "true"
    desk.get_by_label("Quantity").fill("1")
    desk.get_by_role("button", name="Receive").click()
    flash = desk.locator(".flash-success")
    assert "Received 1 × XRT-2000 at CDU (serials XRT-C-1)" in flash.inner_text()
    desk.goto(f"{stocked.base_url}/inventory/stock")
    low = desk.locator("tr.low")
    assert "GEL-250" in low.inner_text()
    screenshot(desk, "stock")


def test_reserving_where_there_is_none_offers_the_others(stocked: Site, desk: Any) -> None:
    sign_in(desk, stocked, "dispatcher", "/inventory/reservations/new")
    desk.get_by_label("Job", exact=True).fill("JOB-1042")
    desk.get_by_label("Part number").fill("XRT-2000")
    desk.get_by_label("Priority").select_option("machine_down")
    desk.get_by_label("Required by").fill("2026-11-26T18:00")
    desk.get_by_label("Times are in").select_option("+08:00")
    desk.get_by_label("Owner (who holds the job)").fill("li.wei")
    desk.get_by_label("Site (hospital)").fill("Ganzi County Hospital")
    desk.get_by_label("Site region").fill("sichuan")
    desk.get_by_label("From warehouse").select_option("CDU")
    desk.get_by_role("button", name="Reserve", exact=True).click()
    alternatives = desk.locator("#alternatives")
    assert "SHA: 1 available" in alternatives.inner_text()
    assert desk.get_by_label("Job", exact=True).input_value() == "JOB-1042"
    screenshot(desk, "reserve-alternatives")
    desk.get_by_role("button", name="Reserve from SHA").click()
    assert (
        "Reserved 1 × XRT-2000 at SHA for JOB-1042" in desk.locator(".flash-success").inner_text()
    )


@pytest.mark.parametrize(
    "path",
    ["/inventory/stock", "/inventory/reservations/new", "/inventory/movements", "/shipments/"],
)
def test_pages_fit_a_phone(stocked: Site, phone: Any, path: str) -> None:
    sign_in(phone, stocked, "dispatcher", path)
    assert page_width(phone) <= 390
    # The menu's links are big enough for a finger (about 44 px).
    heights = phone.locator("header.site nav a").evaluate_all(
        "links => links.map(a => a.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 43, heights


def test_forms_work_without_javascript(stocked: Site, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, stocked, "dispatcher", "/inventory/adjustments/new")
        page.get_by_label("Warehouse").select_option("CDU")
        page.get_by_label("Part number").fill("GEL-250")
        page.get_by_label("Change in count").fill("-2")
        page.get_by_label("Reason").fill("damaged in the van")
        page.get_by_role("button", name="Adjust").click()
        assert "On hand 10" in page.locator(".flash-success").inner_text()
    finally:
        context.close()


@pytest.mark.parametrize("service", ["inventory", "shipments", "tracking"])
def test_the_api_documentation_shows_each_operation(
    live_site: Site, desk: Any, service: str
) -> None:
    """Swagger UI from this origin, under the pages' Content-Security-Policy."""
    refused: list[str] = []
    desk.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)
    desk.on("requestfailed", lambda r: refused.append(f"{r.url} {r.failure}"))
    desk.goto(f"{live_site.base_url}/{service}/api/docs")
    desk.locator(".opblock").first.wait_for()
    paths = desk.locator(".opblock-summary-path").all_inner_texts()
    assert any(path.startswith(f"/{service}/api/v1/") for path in paths), paths
    assert refused == []


def test_the_control_tower_keeps_a_note_not_sent_yet(stocked: Site, desk: Any) -> None:
    # The last tube at SHA promised: its low stock is an open alert to acknowledge.
    stocked.inventory.reserve_part(
        {
            "job_id": "JOB-1042",
            "part_number": "XRT-2000",
            "quantity": 1,
            "warehouse": "SHA",
            "required_by": stocked.clock.now().replace(day=26),
            "priority": "machine_down",
            "owner": "li.wei",
            "site": {"name": "Ganzi County Hospital", "region": "sichuan"},
        }
    )
    wait_until(
        lambda: stocked.tracking.list_alerts(status="open", kind="low_stock").items,
        message="the low-stock alert",
    )
    desk.clock.install()
    sign_in(desk, stocked, "dispatcher", "/tracking/control-tower")
    note = desk.get_by_placeholder("Note (optional)").first
    note.fill("calling the courier now")
    desk.get_by_role("heading", level=1).click()  # the reader looks elsewhere a moment
    desk.evaluate("window.sameVisit = true")
    desk.clock.run_for("02:00")
    assert desk.evaluate("window.sameVisit === true")
    assert note.input_value() == "calling the courier now"
    # With nothing typed the page reloads on its own again.
    note.fill("")
    desk.get_by_role("heading", level=1).click()
    with desk.expect_navigation():
        desk.clock.run_for("01:05")
