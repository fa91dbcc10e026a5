"""Each service's OpenAPI document, loaded from the app that serves it (in-process,
over WSGI), with a system that has something in it: stock, reservations, the
shipments planned for them, tracking events and alerts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from werkzeug.test import Client

from services.embedded import EmbeddedSystem
from shared.auth import UserStore
from tests.conftest import make_settings, wait_until

SERVICES = ("inventory", "shipments", "tracking")


@dataclass
class FuzzedSystem:
    embedded: EmbeddedSystem
    token: str
    ids: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[FuzzedSystem]:
    # On PostgreSQL, whose columns hold no more than they are made for (SQLite would).
    urls = {f"{name}_db_url": postgres.create(f"fuzz_{name}") for name in SERVICES}
    embedded = EmbeddedSystem(make_settings(tmp_path_factory.mktemp("fuzz"), **urls))
    token = UserStore(embedded.settings.users_path).add("fuzz-admin", "admin")
    embedded.start_background()
    system = FuzzedSystem(embedded, token, {})
    system.ids.update(_seed(system))
    yield system
    embedded.close()


def _seed(system: FuzzedSystem) -> dict[str, str]:
    client = Client(system.embedded.wsgi)

    def post(path: str, body: dict[str, Any], status: int = 201) -> Any:
        response = client.post(path, json=body, headers=system.headers)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    now = datetime.now(UTC)
    post(
        "/inventory/api/v1/warehouses",
        {"code": "CDU", "name": "Chengdu depot", "region": "sichuan", "kind": "depot"},
    )
    post(
        "/inventory/api/v1/parts",
        {"part_number": "XRT-2000", "description": "X-ray tube", "serialized": True},
    )
    post(
        "/inventory/api/v1/parts",
        {"part_number": "GEL-250", "description": "Gel", "serialized": False, "reorder_point": 5},
    )
    post(
        "/inventory/api/v1/receipts",
        {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 2, "serials": ["T1", "T2"]},
    )
    post(
        "/inventory/api/v1/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 9}
    )
    reservation = post(
        "/inventory/api/v1/reservations",
        {
            "job_id": "JOB-1",
            "part_number": "XRT-2000",
            "quantity": 1,
            "required_by": (now + timedelta(days=2)).isoformat(),
            "priority": "machine_down",
            "owner": "li.wei",
            "site": {"name": "Ganzi County Hospital", "region": "sichuan"},
        },
    )

    def planned() -> Any:
        response = client.get(
            "/shipments/api/v1/shipments",
            query_string={"reservation_id": reservation["id"]},
            headers=system.headers,
        )
        return response.get_json()

    [shipment] = wait_until(planned, timeout=20, message="the shipment planned")
    post(
        f"/shipments/api/v1/shipments/{shipment['id']}/dispatch",
        {
            "carrier": "SF Express",
            "tracking_number": "SF1001",
            "checkpoints": [{"name": "Kangding", "due_at": (now - timedelta(hours=1)).isoformat()}],
            "dispatched_at": (now - timedelta(hours=3)).isoformat(),
        },
        status=200,
    )

    def tracked() -> bool:
        response = client.get(
            f"/tracking/api/v1/shipments/{shipment['id']}/eta", headers=system.headers
        )
        return response.status_code == 200 and response.get_json()["status"] == "in_transit"

    wait_until(tracked, timeout=20, message="tracking to follow the dispatch")
    event = post(
        "/tracking/api/v1/events",
        {"shipment_id": shipment["id"], "kind": "picked_up", "occurred_at": now.isoformat()},
    )

    def alerts() -> Any:
        # The scheduler's scan, run now: the checkpoint due an hour ago is overdue.
        system.embedded.services["tracking"].scan()
        response = client.get("/tracking/api/v1/alerts", headers=system.headers)
        return response.get_json()

    [*_, alert] = wait_until(alerts, timeout=20, message="an alert raised")
    return {
        "reservation_id": reservation["id"],
        "shipment_id": shipment["id"],
        "event_id": event["id"],
        "alert_id": alert["id"],
        "job_id": "JOB-1",
        "code": "CDU",
        "part_number": "XRT-2000",
        "serial": "T1",
    }


CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            # Unknown query parameters are ignored by design (unknown body fields are
            # refused, and that is checked).
            "allow-extra-parameters": False,
            # The tests send an admin's token; the refusals without one are checked in
            # tests/security.
            "with-security-parameters": False,
        },
        "checks": {
            "positive_data_acceptance": {
                # Some rules span fields, and OpenAPI cannot say them: a shipment id or
                # a carrier with a tracking number; no dispatch in the future; one
                # serial per unit; an Idempotency-Key used with another body. 422 names
                # the field; everything else stays as strict as by default.
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
            }
        },
    }
)


def openapi(system: FuzzedSystem, name: str) -> Any:
    """One service's OpenAPI document, as its app serves it."""
    return schemathesis.openapi.from_wsgi(
        f"/{name}/api/openapi.json", system.embedded.apps[name], config=CONFIG
    )
