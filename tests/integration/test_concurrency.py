"""Reservations race across two `partsflow web inventory` processes (gunicorn, three
workers each) on PostgreSQL: however many ask at once, no more is promised than
there is. Each claim is tried 100 times, a fresh part each time."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

import services.inventory as inventory_pkg
from services.inventory.models import Reservation, ReservationUnit
from services.inventory.service import Inventory
from tests.conftest import make_settings
from tests.processes import Process, environment, free_port, partsflow, wait_for_http
from tests.support import make_tokens, reservation_body

pytestmark = pytest.mark.postgres

ROUNDS = 100
RESERVATIONS = "/inventory/api/v1/reservations"


@dataclass
class TwoServers:
    inventory: Inventory
    urls: list[str]
    token: str


@pytest.fixture(scope="module")
def two_servers(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoServers]:
    data_dir = Path(tmp_path_factory.mktemp("concurrency"))
    settings = make_settings(data_dir, inventory_db_url=postgres.create("concurrency"))
    inventory_pkg.upgrade_database(settings)
    inventory = inventory_pkg.open_service(settings)
    inventory.create_warehouse(
        {"code": "CDU", "name": "Chengdu depot", "region": "sichuan", "kind": "depot"}
    )
    token = make_tokens(settings)["service"]
    servers: list[Process] = []
    urls = []
    try:
        for n in range(2):
            port = free_port()
            servers.append(
                partsflow(
                    "web",
                    "inventory",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "3",
                    env=environment(settings),
                    log=data_dir / f"web-{n}.log",
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, server in zip(urls, servers, strict=True):
            wait_for_http(f"{url}/inventory/healthz", server)
        yield TwoServers(inventory, urls, token)
    finally:
        for server in servers:
            server.stop()
        inventory.db.dispose()


class Crowd:
    """``size`` clients, half of them on each server, that send their requests at the
    same moment. Plain ``http.client`` with the bodies encoded beforehand, so that the
    clients cost little next to the servers they load."""

    def __init__(self, servers: TwoServers, size: int) -> None:
        self.servers = servers
        self.pool = ThreadPoolExecutor(size)
        self.addresses = [urlsplit(url).netloc for url in servers.urls]
        self.headers = {
            "Authorization": f"Bearer {servers.token}",
            "Content-Type": "application/json",
        }

    def reserve_at_once(self, bodies: list[dict]) -> Counter[int]:
        return Counter(status for status, _ in self.post_at_once(bodies))

    def post_at_once(
        self, bodies: list[dict], headers: dict[str, str] | None = None
    ) -> list[tuple[int, dict]]:
        """Each body POSTed to /reservations by its own client; (status, answer) each."""
        encoded = [json.dumps(body).encode() for body in bodies]
        sent_headers = {**self.headers, **(headers or {})}
        start = threading.Barrier(len(bodies))

        def one(i: int) -> tuple[int, dict]:
            connection = http.client.HTTPConnection(self.addresses[i % 2], timeout=60)
            try:
                connection.connect()
                start.wait(timeout=60)
                connection.request("POST", RESERVATIONS, body=encoded[i], headers=sent_headers)
                response = connection.getresponse()
                return response.status, json.loads(response.read() or b"{}")
            finally:
                connection.close()

        return list(self.pool.map(one, range(len(bodies))))

    def close(self) -> None:
        self.pool.shutdown()


def stock_of(inventory: Inventory, part: str) -> tuple[int, int]:
    [row] = inventory.list_stock(part_number=part).items
    return row["on_hand"], row["reserved"]


def assert_books_balance(inventory: Inventory) -> None:
    for row in inventory.ledger_balances():
        assert row["on_hand"] == row["ledger_on_hand"], row
        assert row["reserved"] == row["ledger_reserved"], row
        assert 0 <= row["reserved"] <= row["on_hand"], row
    with inventory.db.reading() as session:
        twice = session.execute(
            select(ReservationUnit.serial)
            .join(Reservation, Reservation.id == ReservationUnit.reservation_id)
            .where(Reservation.status.in_(("confirmed", "issued")))
            .group_by(ReservationUnit.serial)
            .having(func.count() > 1)
        ).all()
    assert twice == []


def test_fifty_ask_for_the_last_unit_exactly_one_gets_it(two_servers: TwoServers) -> None:
    inventory = two_servers.inventory
    parts = [f"XRT-{n:03}" for n in range(ROUNDS)]
    for part in parts:
        inventory.create_part(
            {"part_number": part, "description": "X-ray tube", "serialized": True}
        )
        inventory.receive_stock(
            {"warehouse": "CDU", "part_number": part, "quantity": 1, "serials": [f"{part}-1"]}
        )
    crowd = Crowd(two_servers, 50)
    wrong = []
    try:
        for part in parts:
            bodies = [
                reservation_body(
                    part_number=part, warehouse="CDU", priority="urgent", job_id=f"{part}-J{i}"
                )
                for i in range(50)
            ]
            statuses = crowd.reserve_at_once(bodies)
            if statuses != {201: 1, 409: 49}:
                wrong.append(f"{part}: {dict(statuses)}")
    finally:
        crowd.close()
    assert wrong == []
    assert all(stock_of(inventory, part) == (1, 1) for part in parts)
    assert_books_balance(inventory)


def test_two_ask_for_8_of_10_exactly_one_gets_them(two_servers: TwoServers) -> None:
    inventory = two_servers.inventory
    parts = [f"GEL-{n:03}" for n in range(ROUNDS)]
    for part in parts:
        inventory.create_part({"part_number": part, "description": "Gel", "serialized": False})
        inventory.receive_stock({"warehouse": "CDU", "part_number": part, "quantity": 10})
    crowd = Crowd(two_servers, 2)
    wrong = []
    try:
        for part in parts:
            bodies = [
                reservation_body(
                    part_number=part, warehouse="CDU", quantity=8, job_id=f"{part}-J{i}"
                )
                for i in range(2)
            ]
            statuses = crowd.reserve_at_once(bodies)
            if statuses != {201: 1, 409: 1}:
                wrong.append(f"{part}: {dict(statuses)}")
    finally:
        crowd.close()
    assert wrong == []
    assert all(stock_of(inventory, part) == (10, 8) for part in parts)
    assert_books_balance(inventory)


def test_one_request_sent_many_times_at_once_is_answered_once(
    two_servers: TwoServers,
) -> None:
    """The same reservation with one Idempotency-Key, 16 copies at one moment: every
    copy gets the first answer (a copy that finds the first still being answered waits
    for it), and the reservation is made once. Five rounds."""
    inventory = two_servers.inventory
    crowd = Crowd(two_servers, 16)
    wrong = []
    try:
        for n in range(5):
            part = f"KEYED-{n:03}"
            inventory.create_part({"part_number": part, "description": "Gel", "serialized": False})
            inventory.receive_stock({"warehouse": "CDU", "part_number": part, "quantity": 10})
            body = reservation_body(part_number=part, warehouse="CDU", quantity=3, job_id=f"J-{n}")
            answers = crowd.post_at_once([body] * 16, {"Idempotency-Key": f"reserve-{part}"})
            statuses = sorted({status for status, _ in answers})
            ids = {answer.get("id") for _, answer in answers}
            if statuses != [201] or len(ids) != 1:
                wrong.append(f"{part}: statuses {statuses}, reservation ids {ids}")
            reservations = inventory.list_reservations(part_number=part).items
            if (stock_of(inventory, part)[1], len(reservations)) != (3, 1):
                wrong.append(f"{part}: reserved {stock_of(inventory, part)[1]}")
    finally:
        crowd.close()
    assert wrong == []
