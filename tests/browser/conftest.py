"""The embedded system served for the pages, people who sign in to it, and a headless
Chromium (Debian's; a browser is never downloaded) to look at it.

Browser tests skip with the reason when /usr/bin/chromium is missing, unless
``PARTSFLOW_REQUIRE_SERVICES=1``, when they fail instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.embedded import EmbeddedSystem
from shared.auth import UserStore
from shared.clock import ManualClock
from tests.browser.pageclient import PageClient
from tests.conftest import REQUIRE_SERVICES, make_settings, wait_until
from tests.processes import free_port

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
START = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
PASSWORD = "correct-horse-battery"
PEOPLE = {"dispatcher": "logistics", "engineer": "engineer", "auditor": "viewer"}


@dataclass
class Site:
    """The whole system in this process, with a clock the test moves."""

    system: EmbeddedSystem
    clock: ManualClock
    base_url: str = ""
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def inventory(self) -> Any:
        return self.system.services["inventory"]

    @property
    def shipments(self) -> Any:
        return self.system.services["shipments"]

    @property
    def tracking(self) -> Any:
        return self.system.services["tracking"]

    def client(self, name: str | None = None) -> PageClient:
        client = PageClient(self.system.wsgi)
        if name is not None:
            reply = client.sign_in(name, self.passwords[name])
            assert reply.status == 302, reply.body_text
        return client


def open_site(tmp_path: Path, **overrides: Any) -> Site:
    clock = ManualClock(START)
    system = EmbeddedSystem(make_settings(tmp_path, **overrides), clock=clock)
    users = UserStore(system.settings.users_path)
    for name, role in PEOPLE.items():
        users.add(name, role, PASSWORD)
    return Site(system, clock, passwords=dict.fromkeys(PEOPLE, PASSWORD))


def seed_stock(site: Site) -> None:
    """Two warehouses of the X-ray tube story, its parts, a little stock."""
    inventory = site.inventory
    for warehouse in (
        {"code": "SHA", "name": "Shanghai central", "region": "east-china", "kind": "central"},
        {"code": "CDU", "name": "Chengdu depot", "region": "sichuan", "kind": "depot"},
    ):
        inventory.create_warehouse(warehouse)
    inventory.create_part(
        {
            "part_number": "XRT-2000",
            "description": "CT X-ray tube assembly",
            "serialized": True,
            "reorder_point": 0,
        }
    )
    inventory.create_part(
        {
            "part_number": "GEL-250",
            "description": "Ultrasound gel",
            "serialized": False,
            "reorder_point": 20,
        }
    )
    inventory.receive_stock(
        {"warehouse": "SHA", "part_number": "XRT-2000", "quantity": 1, "serials": ["XRT-S-1"]}
    )
    inventory.receive_stock({"warehouse": "CDU", "part_number": "GEL-250", "quantity": 12})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The system with its workers running: pages over HTTP, no browser."""
    site = open_site(tmp_path)
    site.system.start_background()
    seed_stock(site)
    wait_until(
        lambda: len(site.shipments.list_warehouses()) == 2, message="shipments to learn warehouses"
    )
    yield site
    site.system.close()


@pytest.fixture
def live_site(tmp_path: Path) -> Iterator[Site]:
    """The system served on a free port, its workers running, for the browser."""
    from werkzeug.serving import make_server

    # The alert scheduler runs often, so what it raises shows within a reload or two.
    site = open_site(tmp_path, tracking_scan_seconds=0.5)
    site.system.start_background()
    port = free_port()
    server = make_server("127.0.0.1", port, site.system.wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.base_url = f"http://127.0.0.1:{port}"
    yield site
    server.shutdown()
    thread.join(timeout=10)
    site.system.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if REQUIRE_SERVICES:
            pytest.fail(f"{CHROMIUM} is missing (PARTSFLOW_REQUIRE_SERVICES=1)")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
            headless=True,
        )
        yield chromium
        chromium.close()


@pytest.fixture
def desk(browser: Any) -> Iterator[Any]:
    """A page in a desktop-sized window, at the Chengdu depot (UTC+08:00)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Asia/Shanghai"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A page in a phone-sized window (390 by 844), as an engineer on site holds it."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        timezone_id="Asia/Shanghai",
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page: Any, site: Site, name: str, next_path: str = "/") -> None:
    page.goto(f"{site.base_url}{next_path}")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(site.passwords[name])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.base_url}{next_path}")


def screenshot(page: Any, name: str) -> None:
    """Keep a picture of a main page for the README."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def page_width(page: Any) -> int:
    """How wide the page's content is: wider than the window means sideways scrolling."""
    return int(page.evaluate("document.documentElement.scrollWidth"))
