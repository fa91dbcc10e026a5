"""A downstream service for the fault tests: it keeps a read model of inventory's
reservations from ``inventory.reservation.*`` events, the way shipments and tracking
do, on the same bus machinery (its own database, inbox, queue and dead-letter queue).

Every event it applies is recorded by message id, so a test can count the effects of
each business id; a stale version is recorded too, and refused. Two knobs make it a
misbehaving consumer on purpose: events of a job whose id starts with ``POISON`` always
fail, and events of a job whose id starts with ``SLOW`` take ``slow_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert

from shared.bus.consumer import Route, queue_specs
from shared.bus.store import define_bus_tables
from shared.bus.topology import Topology
from shared.config import Settings
from shared.contracts.inventory import ReservationData
from shared.db import Database
from shared.worker import Worker

NAME = "watcher"

metadata = MetaData()
BUS = define_bus_tables(metadata)
reservations = Table(
    "watched_reservations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(100), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
)
applied = Table(
    "applied_events",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("type", String(200), nullable=False),
    Column("reservation_id", String(36), nullable=False),
    Column("job_id", String(100), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("stale", Boolean, nullable=False),
)


class PoisonedJob(RuntimeError):
    """The bug this consumer has on purpose."""


class Watcher:
    def __init__(self, db: Database, *, slow_seconds: float = 0.0) -> None:
        self.db = db
        self.slow_seconds = slow_seconds
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def note(self, data: dict[str, Any], envelope: dict[str, Any]) -> None:
        job_id = data["job_id"]
        with self._lock:
            self.calls[envelope["id"]] += 1
        if job_id.startswith("POISON"):
            raise PoisonedJob(f"job {job_id} breaks this consumer every time")
        if job_id.startswith("SLOW"):
            time.sleep(self.slow_seconds)
        with self.db.transaction() as tx:
            upsert = insert(reservations).values(
                id=data["id"], job_id=job_id, status=data["status"], version=data["version"]
            )
            newer = tx.session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[reservations.c.id],
                    set_={"status": upsert.excluded.status, "version": upsert.excluded.version},
                    where=reservations.c.version < upsert.excluded.version,
                )
            ).rowcount
            tx.session.execute(
                applied.insert().values(
                    message_id=envelope["id"],
                    type=envelope["type"],
                    reservation_id=data["id"],
                    job_id=job_id,
                    version=data["version"],
                    stale=newer == 0,
                )
            )

    # -- what a test reads ---------------------------------------------------------------
    def effects_per_job(self, event_type: str) -> Counter[str]:
        """Job id -> how many distinct events of ``event_type`` were applied for it."""
        with self.db.reading() as session:
            rows = session.execute(
                select(applied.c.job_id, func.count())
                .where(applied.c.type == event_type)
                .group_by(applied.c.job_id)
            ).all()
        return Counter({job_id: count for job_id, count in rows})

    def states(self) -> dict[str, tuple[str, int]]:
        """Reservation id -> (status, version) as this read model holds it."""
        with self.db.reading() as session:
            rows = session.execute(
                select(reservations.c.id, reservations.c.status, reservations.c.version)
            ).all()
        return {rid: (status, version) for rid, status, version in rows}

    def stale_refused(self) -> int:
        with self.db.reading() as session:
            return session.scalar(select(func.count()).where(applied.c.stale)) or 0


def handle(watcher: Watcher, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    watcher.note(data, envelope)


ROUTES: dict[str, Route] = {
    f"inventory.reservation.{kind}": Route(handle, ReservationData)
    for kind in ("confirmed", "released", "preempted")
}


def topology(settings: Settings) -> Topology:
    return Topology.from_settings(settings, queue_specs(NAME, ROUTES))


def open_watcher(settings: Settings, db_url: str, *, slow_seconds: float = 0.0) -> Watcher:
    db = Database(db_url, service=NAME, bus=BUS)
    metadata.create_all(db.engine)
    return Watcher(db, slow_seconds=slow_seconds)


def create_worker(settings: Settings, watcher: Watcher, *, consumer_threads: int = 1) -> Worker:
    return Worker(
        service=NAME,
        settings=settings,
        db=watcher.db,
        topology=topology(settings),
        routes=ROUTES,
        target=watcher,
        consumer_threads=consumer_threads,
    )
