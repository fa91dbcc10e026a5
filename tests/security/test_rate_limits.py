"""Per-user rate limits on writes: past the limit a write is refused with 429 and
``Retry-After``, changes nothing, and leaves reads and other users alone. With Redis
as the storage, every app process draws on the same budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

import services.inventory as inventory_pkg
from shared.config import ConfigError, load_settings
from shared.web import PROBLEM_JSON
from tests.conftest import wait_until
from tests.processes import environment, free_port, json_headers, partsflow, wait_for_http
from tests.security.conftest import System, bearer, open_system, sign_in

WAREHOUSES = "/inventory/api/v1/warehouses"


def warehouse(code: str) -> dict[str, Any]:
    return {"code": code, "name": f"Depot {code}", "region": "sichuan", "kind": "depot"}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[System]:
    system = open_system(tmp_path, write_rate_limit="3/minute")
    yield system
    system.embedded.close()


class TestWritesPastTheLimit:
    def test_the_write_past_the_limit_is_429_with_retry_after(self, limited: System) -> None:
        client = limited.client()
        logistics = bearer(limited.tokens["logistics"])
        for code in ("W1", "W2", "W3"):
            assert (
                client.post(WAREHOUSES, json=warehouse(code), headers=logistics).status_code == 201
            )
        before = limited.announced()
        refused = client.post(WAREHOUSES, json=warehouse("W4"), headers=logistics)
        assert refused.status_code == 429
        assert refused.mimetype == PROBLEM_JSON
        body = refused.get_json()
        assert body["status"] == 429
        assert body["title"] == "Too Many Requests"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert limited.announced() == before
        codes = [w["code"] for w in client.get(WAREHOUSES, headers=logistics).get_json()]
        assert codes == ["W1", "W2", "W3"]

    def test_the_budget_is_shared_by_every_write_endpoint(self, limited: System) -> None:
        client = limited.client()
        admin = bearer(limited.tokens["admin"])
        assert client.post(WAREHOUSES, json=warehouse("CDU"), headers=admin).status_code == 201
        part = {"part_number": "GEL-250", "description": "Gel", "serialized": False}
        assert client.post("/inventory/api/v1/parts", json=part, headers=admin).status_code == 201
        receipt = {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 5}
        assert (
            client.post("/inventory/api/v1/receipts", json=receipt, headers=admin).status_code
            == 201
        )
        adjustment = {"warehouse": "CDU", "part_number": "GEL-250", "delta": 1, "reason": "count"}
        response = client.post("/inventory/api/v1/adjustments", json=adjustment, headers=admin)
        assert response.status_code == 429

    def test_refused_writes_count_against_nobody_else(self, limited: System) -> None:
        client = limited.client()
        logistics = bearer(limited.tokens["logistics"])
        for code in ("W1", "W2", "W3", "W4"):
            client.post(WAREHOUSES, json=warehouse(code), headers=logistics)
        admin = bearer(limited.tokens["admin"])
        assert client.post(WAREHOUSES, json=warehouse("A1"), headers=admin).status_code == 201

    def test_reads_are_not_limited(self, limited: System) -> None:
        client = limited.client()
        viewer = bearer(limited.tokens["viewer"])
        statuses = Counter(client.get(WAREHOUSES, headers=viewer).status_code for _ in range(20))
        assert statuses == {200: 20}

    def test_each_service_counts_its_own_writes(self, limited: System) -> None:
        client = limited.client()
        admin = bearer(limited.tokens["admin"])
        for code in ("W1", "W2", "W3"):
            client.post(WAREHOUSES, json=warehouse(code), headers=admin)
        assert client.post(WAREHOUSES, json=warehouse("W4"), headers=admin).status_code == 429
        event = {
            "shipment_id": "unknown",
            "kind": "picked_up",
            "occurred_at": "2026-11-20T08:00:00Z",
        }
        response = client.post("/tracking/api/v1/events", json=event, headers=admin)
        assert response.status_code == 404

    def test_a_refused_write_leaves_its_idempotency_key_unused(self, limited: System) -> None:
        client = limited.client()
        logistics = bearer(limited.tokens["logistics"])
        for code in ("W1", "W2", "W3"):
            client.post(WAREHOUSES, json=warehouse(code), headers=logistics)
        refused = client.post(
            WAREHOUSES, json=warehouse("W4"), headers={**logistics, "Idempotency-Key": "retry-me"}
        )
        assert refused.status_code == 429
        db = limited.service("inventory").db
        keys = db.bus.idempotency_keys
        with db.reading() as session:
            assert session.execute(select(keys).where(keys.c.key == "retry-me")).all() == []

    def test_page_forms_are_not_counted(self, limited: System) -> None:
        client = limited.client()
        assert sign_in(client, "sec-logistics").status_code == 302
        for _ in range(5):
            assert client.get("/inventory/stock").status_code == 200
            assert client.post("/logout", data={}).status_code == 400


def test_a_write_is_taken_again_once_the_window_has_passed(tmp_path: Path) -> None:
    system = open_system(tmp_path, write_rate_limit="1/second")
    try:
        client = system.client()
        admin = bearer(system.tokens["admin"])
        codes = iter(f"W{i}" for i in range(1000))
        refused = wait_until(
            lambda: (
                r
                if (
                    r := client.post(WAREHOUSES, json=warehouse(next(codes)), headers=admin)
                ).status_code
                == 429
                else None
            ),
            timeout=10,
            message="a write refused",
        )
        assert refused.headers["Retry-After"] == "1"
        wait_until(
            lambda: (
                client.post(WAREHOUSES, json=warehouse(next(codes)), headers=admin).status_code
                == 201
            ),
            timeout=10,
            message="a write taken again",
        )
    finally:
        system.embedded.close()


class TestSettings:
    def test_off_by_default_with_memory_storage(self) -> None:
        settings = load_settings(environ={}, embedded=True)
        assert settings.write_rate_limit == ""
        assert settings.rate_limit_storage_url == "memory://"

    def test_read_from_the_environment(self) -> None:
        settings = load_settings(
            environ={
                "PARTSFLOW_WRITE_RATE_LIMIT": "10/second; 600/hour",
                "PARTSFLOW_RATE_LIMIT_STORAGE_URL": "redis://cache:6379/2",
            },
            embedded=True,
        )
        assert settings.write_rate_limit == "10/second; 600/hour"
        assert settings.rate_limit_storage_url == "redis://cache:6379/2"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("PARTSFLOW_WRITE_RATE_LIMIT", "lots"),
            ("PARTSFLOW_RATE_LIMIT_STORAGE_URL", "memcached://cache:11211"),
        ],
    )
    def test_a_malformed_value_stops_the_start(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError, match=name):
            load_settings(environ={name: value}, embedded=True)


class TestSharedStorage:
    def test_without_redis_writes_go_on_counted_by_each_process(self, tmp_path: Path) -> None:
        unreachable = f"redis://127.0.0.1:{free_port()}/0"
        system = open_system(
            tmp_path, write_rate_limit="2/minute", rate_limit_storage_url=unreachable
        )
        try:
            client = system.client()
            admin = bearer(system.tokens["admin"])
            statuses = [
                client.post(WAREHOUSES, json=warehouse(f"W{i}"), headers=admin).status_code
                for i in range(3)
            ]
        finally:
            system.embedded.close()
        assert statuses == [201, 201, 429]

    def test_two_app_processes_share_one_budget_in_redis(
        self, tmp_path: Path, redis_url: str
    ) -> None:
        """Two app instances, as two gunicorn workers hold them, on one Redis."""
        first = open_system(
            tmp_path / "a", write_rate_limit="3/minute", rate_limit_storage_url=redis_url
        )
        settings = first.settings
        second_app = inventory_pkg.create_app(settings=settings)
        try:
            admin = bearer(first.tokens["admin"])
            one, two = first.client(), second_app.test_client()
            assert one.post(WAREHOUSES, json=warehouse("W1"), headers=admin).status_code == 201
            assert two.post(WAREHOUSES, json=warehouse("W2"), headers=admin).status_code == 201
            assert one.post(WAREHOUSES, json=warehouse("W3"), headers=admin).status_code == 201
            assert two.post(WAREHOUSES, json=warehouse("W4"), headers=admin).status_code == 429
            assert one.post(WAREHOUSES, json=warehouse("W5"), headers=admin).status_code == 429
        finally:
            first.embedded.close()

    def test_the_limit_holds_across_gunicorn_workers(self, tmp_path: Path, redis_url: str) -> None:
        system = open_system(
            tmp_path, write_rate_limit="5/minute", rate_limit_storage_url=redis_url
        )
        system.embedded.close()
        env = environment(
            system.settings,
            PARTSFLOW_WRITE_RATE_LIMIT="5/minute",
            PARTSFLOW_RATE_LIMIT_STORAGE_URL=redis_url,
        )
        port = free_port()
        web = partsflow(
            "web",
            "inventory",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "3",
            env=env,
            log=tmp_path / "web.log",
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base}/inventory/healthz", web)
            headers = json_headers(system.tokens["admin"])

            def create(i: int) -> int:
                # A new connection each time, so the writes spread over the workers.
                return requests.post(
                    f"{base}{WAREHOUSES}", json=warehouse(f"G{i}"), headers=headers, timeout=30
                ).status_code

            with ThreadPoolExecutor(6) as pool:
                statuses = Counter(pool.map(create, range(15)))
        finally:
            web.stop()
        assert statuses == {201: 5, 429: 10}
