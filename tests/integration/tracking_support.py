"""Tracking on its own: its app and service on SQLite with a clock the test moves, and
messages delivered to it through its real routes (schema, inbox, handler), as its
consumer delivers them, while shipments and inventory are played by the test."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

import services.tracking as tracking_pkg
from services import bootstrap
from services.tracking.handlers import ROUTES
from services.tracking.models import BUS
from services.tracking.service import Tracking
from shared.bus.consumer import MessageConsumer, Outcome
from shared.bus.envelope import encode, make_envelope
from shared.clock import ManualClock
from shared.config import Settings
from tests.support import ApiClient, make_tokens

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
V1 = "/tracking/api/v1"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class FakeDelivery:
    """What the consumer receives from kombu: a body and its properties."""

    body: str
    properties: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingUnderTest:
    settings: Settings
    clock: ManualClock
    service: Tracking
    app: Any
    tokens: dict[str, str]
    consumer: MessageConsumer
    versions: dict[str, int] = field(default_factory=dict)

    def api(self, role: str = "admin") -> ApiClient:
        return ApiClient(self.app.test_client(), self.tokens.get(role))

    # -- messages in ---------------------------------------------------------------------
    def deliver(
        self,
        type: str,
        data: dict[str, Any],
        *,
        message_id: str | None = None,
        source: str = "partsflow/test",
        correlation_id: str | None = None,
        sent_at: datetime | None = None,
    ) -> tuple[Outcome, str]:
        envelope = make_envelope(
            type,
            source=source,
            data=json.loads(json.dumps(data, default=str)),
            id=message_id,
            correlationid=correlation_id,
            time=sent_at,
        )
        delivery = FakeDelivery(
            encode(envelope), {"type": type, "message_id": envelope["id"], "reply_to": None}
        )
        return self.consumer.handle(delivery)

    def shipment(self, event: str, data: dict[str, Any], *, version: int | None = None) -> None:
        """Shipments announces a shipment; versions go up by one unless given."""
        if version is None:
            version = self.versions.get(data["id"], 0) + 1
        self.versions[data["id"]] = max(version, self.versions.get(data["id"], 0))
        outcome, reason = self.deliver(
            f"shipments.shipment.{event}", {**data, "version": version}, source="shipments"
        )
        assert outcome is Outcome.ACK, reason

    def reservation(self, event: str, data: dict[str, Any]) -> None:
        outcome, reason = self.deliver(
            f"inventory.reservation.{event}", data, source="partsflow/inventory"
        )
        assert outcome is Outcome.ACK, reason

    # -- messages out ----------------------------------------------------------------------
    def published(self, type: str | None = None) -> list[dict[str, Any]]:
        """What tracking has committed to send, oldest first (its outbox)."""
        outbox = BUS.outbox
        query = select(outbox.c.body, outbox.c.routing_key).order_by(outbox.c.id)
        with self.service.db.reading() as s:
            rows = s.execute(query).all()
        return [json.loads(body) for body, key in rows if type is None or key == type]

    def alerts(self, **query: Any) -> list[dict[str, Any]]:
        reply = self.api().get(f"{V1}/alerts", **query)
        assert reply.status == 200, reply
        return reply.body

    def open_alerts(self, **query: Any) -> list[dict[str, Any]]:
        return [a for a in self.alerts(**query) if a["status"] != "resolved"]


def start_tracking(settings: Settings, start: datetime = T0) -> TrackingUnderTest:
    tracking_pkg.upgrade_database(settings)
    clock = ManualClock(start)
    service = tracking_pkg.open_service(settings, clock)
    app = tracking_pkg.create_app(settings=settings, service=service)
    consumer = MessageConsumer(
        settings=settings,
        topology=bootstrap.bus_topology(settings),
        service="tracking",
        db=service.db,
        routes=ROUTES,
        target=service,
    )
    return TrackingUnderTest(settings, clock, service, app, make_tokens(settings), consumer)


# -- what shipments and inventory say ------------------------------------------------------
def reservation_data(**changes: Any) -> dict[str, Any]:
    data = {
        "id": str(uuid.uuid4()),
        "job_id": "JOB-7",
        "part_number": "XRT-2000",
        "quantity": 1,
        "warehouse": "CDU",
        "warehouse_region": "sichuan",
        "status": "confirmed",
        "priority": "machine_down",
        "required_by": iso(at(24)),
        "owner": "li.wei",
        "site": {"name": "Ganzi County Hospital", "region": "ganzi"},
        "serials": ["XRT-C-2001"],
        "replaces": None,
        "shipment_id": None,
        "version": 1,
    }
    data.update(changes)
    return data


def shipment_data(**changes: Any) -> dict[str, Any]:
    """A shipment as shipments' events carry it; ``in_transit`` hand-carry by default."""
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": "in_transit",
        "origin": "CDU",
        "origin_region": "sichuan",
        "destination": {"site": "Ganzi County Hospital", "warehouse": None, "region": "ganzi"},
        "mode": "hand_carry",
        "carrier": None,
        "tracking_number": None,
        "lines": [{"part_number": "XRT-2000", "quantity": 1, "reservation_id": None}],
        "job_id": "JOB-7",
        "priority": "machine_down",
        "owner": "li.wei",
        "required_by": iso(at(24)),
        "promised_delivery_at": iso(at(13)),
        "dispatched_at": iso(T0),
        "delivered_at": None,
        "checkpoints": [],
    }
    data.update(changes)
    return data


def hourly_checkpoints(count: int = 12, start: datetime = T0) -> list[dict[str, Any]]:
    return [
        {"name": f"CP{i}", "due_at": iso(start + timedelta(hours=i)), "passed_at": None}
        for i in range(1, count + 1)
    ]


def event_body(shipment_id: str, kind: str, occurred_at: datetime, **extra: Any) -> dict:
    return {"shipment_id": shipment_id, "kind": kind, "occurred_at": iso(occurred_at), **extra}
