"""Limits that keep one client from taking the service down: list pages have a
maximum size, bodies a size cap, and writes a per-user rate (set low here; see
``PARTSFLOW_WRITE_RATE_LIMIT``)."""

from __future__ import annotations

import json

from shared.web import PROBLEM_JSON
from tests.security.conftest import System, bearer, is_api, open_system


def list_paths(system: System) -> list[str]:
    """API reads documented as answering with an array, from each OpenAPI document."""
    found = []
    client = system.client()
    for service in ("inventory", "shipments", "tracking"):
        spec = client.get(f"/{service}/api/openapi.json").get_json()
        for path, operations in spec["paths"].items():
            get = operations.get("get")
            if get is None or "{" in path:
                continue
            content = get["responses"]["200"].get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("type") == "array":
                found.append(path)
    return found


class TestPagination:
    def test_every_list_is_paginated_with_at_most_1000_a_page(self, system: System) -> None:
        client = system.client()
        admin = bearer(system.tokens["admin"])
        paths = list_paths(system)
        assert "/inventory/api/v1/stock" in paths
        wrong = []
        for path in paths:
            fine = client.get(path, query_string={"page_size": 1000}, headers=admin)
            if fine.status_code != 200 or "X-Pagination" not in fine.headers:
                wrong.append(f"{path} page_size=1000: {fine.status_code}")
            too_big = client.get(path, query_string={"page_size": 1001}, headers=admin)
            if too_big.status_code != 422 or too_big.mimetype != PROBLEM_JSON:
                wrong.append(f"{path} page_size=1001: {too_big.status_code}")
        assert wrong == []

    def test_every_list_documents_pages_of_100_up_to_1000(self, system: System) -> None:
        client = system.client()
        wrong = []
        for service in ("inventory", "shipments", "tracking"):
            spec = client.get(f"/{service}/api/openapi.json").get_json()
            for path in list_paths(system):
                if path not in spec["paths"]:
                    continue
                parameters = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
                size = parameters.get("page_size", {}).get("schema", {})
                if (size.get("default"), size.get("maximum")) != (100, 1000):
                    wrong.append(f"{path}: page_size {size}")
        assert wrong == []

    def test_a_long_list_comes_in_pages_of_100(self, tmp_path) -> None:
        system = open_system(tmp_path)
        try:
            inventory = system.service("inventory")
            for i in range(101):
                inventory.create_warehouse(
                    {"code": f"D{i:03}", "name": "Depot", "region": "sichuan", "kind": "van"}
                )
            response = system.client().get(
                "/inventory/api/v1/warehouses", headers=bearer(system.tokens["viewer"])
            )
            assert len(response.get_json()) == 100
            pagination = json.loads(response.headers["X-Pagination"])
            assert (pagination["total"], pagination["page"], pagination["next_page"]) == (
                101,
                1,
                2,
            )
        finally:
            system.embedded.close()


class TestBodySize:
    def test_a_body_over_1_mib_is_413_on_every_write(self, system: System) -> None:
        client = system.client()
        admin = bearer(system.tokens["admin"])
        body = json.dumps({"note": "x" * (1024 * 1024)})
        before = system.announced()
        wrong = []
        for route in system.routes():
            if not is_api(route) or route.method not in ("POST", "PUT", "PATCH"):
                continue
            response = client.open(
                route.path,
                method=route.method,
                data=body,
                content_type="application/json",
                headers=admin,
            )
            if response.status_code != 413 or response.mimetype != PROBLEM_JSON:
                wrong.append(f"{route}: {response.status_code}")
        assert wrong == []
        assert system.announced() == before
