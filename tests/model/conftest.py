"""Inventory and shipments on real PostgreSQL, with the bus between them driven by
the test: events are read from each outbox and handed to the other service's
handlers (the real routing table, schemas and inbox), in whatever order and as
often as a rule says."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from services import bootstrap
from shared.bus.context import MessageContext, message_context
from shared.bus.envelope import decode
from shared.bus.topology import COMMAND
from shared.clock import ManualClock
from tests.conftest import make_settings

START = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
SERVICES = ("inventory", "shipments")


@dataclass
class Message:
    """A message on its way to one consumer."""

    envelope: dict[str, Any]
    consumer: str

    @property
    def type(self) -> str:
        return self.envelope["type"]

    def __repr__(self) -> str:
        return f"<{self.type} {self.envelope.get('subject', '')[:8]} to {self.consumer}>"


@dataclass
class SyncBus:
    """The broker, played by the test: what the outboxes hold is queued for every
    service that listens to it, and delivered one message at a time, as the
    consumer delivers it (validated by the route's schema, recorded in the inbox)."""

    services: dict[str, Any]
    pending: list[Message] = field(default_factory=list)
    delivered: list[Message] = field(default_factory=list)
    # Everything published so far, in the order the outboxes hold it.
    published: list[dict[str, Any]] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.pending.clear()
        self.delivered.clear()
        self.published.clear()
        self._seen.clear()

    def collect(self) -> list[dict[str, Any]]:
        """Queue what was committed to the outboxes since the last look; return it."""
        found = []
        for name, service in self.services.items():
            outbox = service.db.bus.outbox
            with service.db.reading() as session:
                rows = session.execute(
                    select(outbox.c.id, outbox.c.body)
                    .where(outbox.c.id > self._seen.get(name, 0))
                    .order_by(outbox.c.id)
                ).all()
            for row in rows:
                self._seen[name] = row.id
                envelope = decode(row.body)
                found.append(envelope)
                self.published.append(envelope)
                for consumer in self.services:
                    if envelope["type"] in bootstrap.ROUTES[consumer]:
                        self.pending.append(Message(envelope, consumer))
        return found

    def send(self, message: Message) -> None:
        """Queue a message that comes from outside (a command, a tracking event)."""
        self.pending.append(message)

    def deliver(self, message: Message) -> None:
        """Apply one message as the consumer does; raises ``DuplicateDelivery`` when its
        id is in the consumer's inbox already."""
        route = bootstrap.ROUTES[message.consumer][message.type]
        envelope = message.envelope
        data = route.schema().load(envelope["data"]) if route.schema else envelope["data"]
        context = MessageContext(
            correlation_id=envelope["id"] if route.kind == COMMAND else envelope["correlationid"],
            inbox_message_id=envelope["id"],
            inbox_message_type=envelope["type"],
        )
        with message_context(context):
            route.handle(self.services[message.consumer], data, envelope)


@dataclass
class World:
    clock: ManualClock
    inventory: Any
    shipments: Any
    bus: SyncBus

    def reset(self) -> None:
        """Empty every table (the schema stays), so each example starts afresh."""
        for service in (self.inventory, self.shipments):
            with service.db.engine.begin() as conn:
                tables = conn.scalars(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename <> 'alembic_version'"
                    )
                ).all()
                names = ", ".join(f'"{table}"' for table in tables)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        self.bus.reset()
        self.clock.set(START)


@pytest.fixture(scope="module")
def world(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(
        Path(tmp_path_factory.mktemp("model")),
        **{f"{name}_db_url": postgres.create(f"model_{name}") for name in SERVICES},
    )
    bootstrap.upgrade_databases(settings, list(SERVICES))
    clock = ManualClock(START)
    services = {name: bootstrap.open_service(name, settings, clock) for name in SERVICES}
    yield World(clock, services["inventory"], services["shipments"], SyncBus(services))
    for service in services.values():
        service.db.dispose()
