"""Tracking's use cases: one function per action, each its own transaction.

Tracking keeps a read model of jobs, reservations and shipments from inventory's and
shipments' events, records tracking events, learns transit times from delivered
shipments, and judges every open shipment: its ETA (``eta.py``), its risk, and its
problems (``alerts.py``). A change of state and the events announcing it commit
together. Whatever touches a shipment locks its row first (PostgreSQL), so the
scheduler and the consumers take turns on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.tracking import alerts, eta
from services.tracking.models import (
    Alert,
    Job,
    JobReservation,
    KnownWarehouse,
    LaneTransit,
    Rescue,
    ShipmentCheckpoint,
    ShipmentLine,
    Sourcing,
    StockSignal,
    TrackedShipment,
    TrackingEvent,
)
from shared.bus.context import once_heard_of
from shared.bus.store import Transaction
from shared.clock import Clock, SystemClock
from shared.contracts import name_key
from shared.db import Database
from shared.errors import Conflict, DomainError, InvalidInput, NotFound

SOURCE = "partsflow/tracking"
# Shipments the scheduler looks at: those still on their way or about to leave.
SCANNED = ("planned", "in_transit", "exception")
# A shipment in one of these has ended its journey: nothing on its route is ahead.
JOURNEY_ENDED = ("delivered", "lost", "cancelled")
MOVEMENT_KINDS = ("picked_up", "checkpoint", "in_transit", "out_for_delivery")
# Events that place a shipment at a planned checkpoint when they name it.
PASSING_KINDS = (*MOVEMENT_KINDS, "delivered")
RESCUED_PRIORITIES = ("machine_down", "urgent")
# An event time "now" may come from a sender's clock a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=2)
# Reservations that no longer count towards their job.
SET_ASIDE = ("released", "preempted")
RISK_SEVERITY = {
    "delivered": 0,
    "on_track": 1,
    "delivered_late": 2,
    "at_risk": 3,
    "late": 4,
    "lost": 5,
}
# How much of a lane's history is read: the recent past says most about the near future.
LANE_WINDOW = 500
# Tracking hears of a new shipment from shipments' events a few milliseconds after
# shipments answered its creator, so a carrier's first scan or a first look at the ETA
# may come before it. The API waits this long for such a shipment before it says 404.
SHIPMENT_GRACE_SECONDS = 2.0

LaneKey = tuple[str, str, str, str]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int


@dataclass
class _Written:
    """What applying a shipment's event just wrote: its lines and checkpoints in full,
    its job (held, so the session need not read it again), and whether tracking
    first heard of the shipment in this transaction."""

    lines: list[ShipmentLine]
    checkpoints: list[ShipmentCheckpoint]
    first_seen: bool
    job: Job | None


@dataclass
class _Snapshot:
    """One shipment as judged at one moment."""

    shipment: TrackedShipment
    now: datetime
    checkpoints: list[ShipmentCheckpoint]
    lines: list[ShipmentLine]
    reservations: list[JobReservation]
    estimate: eta.Estimate
    required_by: datetime | None
    risk: str
    situation: alerts.ShipmentSituation
    last_event: TrackingEvent | None


@dataclass
class _Lanes:
    """Lane statistics read once per unit of work."""

    stats: dict[LaneKey | tuple[str, str], eta.LaneStats] = field(default_factory=dict)


class _LaneCache:
    """Statistics of busy lanes, kept a few seconds: computing them over hundreds of
    transits costs more than the rest of an ETA. A transit learned in this process
    clears its lanes at once; one learned by another process is seen within the TTL,
    which moves a statistic over many transits by a hair at most. Lanes with little
    history are never cached: they are cheap, and each new transit matters there."""

    TTL_SECONDS = 5.0
    MIN_TRANSITS = 20

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, eta.LaneStats]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> eta.LaneStats | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: Any, stats: eta.LaneStats) -> None:
        if stats.count >= self.MIN_TRANSITS:
            with self._lock:
                self._entries[key] = (time.monotonic() + self.TTL_SECONDS, stats)

    def forget(self, *keys: Any) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)


class Tracking:
    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        eta_step_minutes: float = 15.0,
        shipment_grace_seconds: float = SHIPMENT_GRACE_SECONDS,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.eta_step_minutes = eta_step_minutes
        self.shipment_grace_seconds = shipment_grace_seconds
        self._lane_cache = _LaneCache()

    def _once_heard_of(
        self, work: Callable[[], _T], lookup: Callable[[Session], str | None], wait: bool
    ) -> _T:
        """``work``, about a shipment or a job; if tracking has not heard of it
        (NotFound) and ``wait``, again once it has, waiting SHIPMENT_GRACE_SECONDS at
        most."""

        def heard() -> bool:
            with self.db.reading() as s:
                return lookup(s) is not None

        return once_heard_of(work, heard, self.shipment_grace_seconds if wait else 0.0)

    # ==================================================================================
    # Tracking events
    # ==================================================================================
    def record_event(
        self,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        answer_repeat: bool = False,
        wait_for_shipment: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Record a scan or report about a shipment, found by id or by carrier and
        tracking number. Returns (event, created): a repeat of the sender's
        ``event_id`` changes nothing. ``answer_repeat``: announce a repeat again (a
        command's sender waits for an answer). ``wait_for_shipment``: a shipment not
        heard of yet is waited for a moment before NotFound (the API's callers)."""
        return self._once_heard_of(
            lambda: self._record_event(data, source, answer_repeat),
            lambda s: _shipment_named(s, data),
            wait_for_shipment,
        )

    def _record_event(
        self, data: Mapping[str, Any], source: str | None, answer_repeat: bool
    ) -> tuple[dict[str, Any], bool]:
        now = self.clock.now()
        if data["occurred_at"] > now + CLOCK_SKEW:
            raise InvalidInput(
                "a tracking event cannot have happened in the future",
                errors={"occurred_at": ["must not be in the future"]},
            )
        with self.db.transaction() as tx:
            s = tx.session
            shipment = self._find_shipment(s, data)
            event, created = self._record(s, shipment, data, source, now)
            resource = event_resource(event)
            if created:
                tx.publish("tracking.event.recorded", subject=shipment.id, data=resource)
                self._after_change(tx, shipment, now, _Lanes())
            elif answer_repeat:
                tx.answer_repeat(
                    "tracking.event.recorded",
                    subject=shipment.id,
                    data={**resource, "repeat": True},
                )
        return resource, created

    def reject_command(
        self,
        event_type: str,
        envelope: Mapping[str, Any],
        error: DomainError,
        *,
        request: Mapping[str, Any],
    ) -> None:
        """Answer a command that could not be carried out with its ``*.rejected`` event."""
        data: dict[str, Any] = {
            "command_id": envelope["id"],
            "status": "rejected",
            "reason": error.type_slug,
            "detail": error.detail,
            **{
                k: _jsonable(request[k])
                for k in ("shipment_id", "carrier", "tracking_number", "kind", "event_id")
                if k in request
            },
        }
        if isinstance(error, InvalidInput):
            data["errors"] = error.errors
        with self.db.transaction() as tx:
            tx.publish(event_type, subject=envelope["id"], data=data)

    def shipment_events(
        self, shipment_id: str, *, wait_for_shipment: bool = False
    ) -> list[dict[str, Any]]:
        return self._once_heard_of(
            lambda: self._shipment_events(shipment_id),
            lambda s: s.scalar(_shipment_id_query(shipment_id)),
            wait_for_shipment,
        )

    def _shipment_events(self, shipment_id: str) -> list[dict[str, Any]]:
        with self.db.reading() as s:
            if s.get(TrackedShipment, shipment_id) is None:
                raise NotFound(f"no shipment {shipment_id}")
            events = s.scalars(
                select(TrackingEvent)
                .where(TrackingEvent.shipment_id == shipment_id)
                .order_by(TrackingEvent.occurred_at, TrackingEvent.recorded_at)
            ).all()
            return [event_resource(e) for e in events]

    def _find_shipment(self, s: Session, data: Mapping[str, Any]) -> TrackedShipment:
        if data.get("shipment_id"):
            shipment = _shipment_for_update(s, data["shipment_id"], self.db.is_postgres)
            if shipment is None:
                raise NotFound(
                    f"no shipment {data['shipment_id']}",
                    errors={"shipment_id": ["unknown shipment"]},
                )
            return shipment
        found = _carried(s, data["carrier"], data["tracking_number"])
        shipment = _shipment_for_update(s, found, self.db.is_postgres) if found else None
        if shipment is None:
            raise NotFound(
                f"no shipment with {data['carrier']} tracking number {data['tracking_number']}",
                errors={"tracking_number": ["unknown tracking number for this carrier"]},
            )
        return shipment

    def _record(
        self,
        s: Session,
        shipment: TrackedShipment,
        data: Mapping[str, Any],
        source: str | None,
        now: datetime,
    ) -> tuple[TrackingEvent, bool]:
        sender_id = data.get("event_id")
        if sender_id:
            existing = _sender_event(s, shipment.id, sender_id)
            if existing is not None:
                return existing, False
        if data.get("shipment_id"):
            _same_carriage(shipment, data)
        event = TrackingEvent(
            id=str(uuid.uuid4()),
            shipment_id=shipment.id,
            kind=data["kind"],
            occurred_at=data["occurred_at"],
            checkpoint=data.get("checkpoint"),
            location=data.get("location"),
            note=data.get("note"),
            event_id=sender_id,
            carrier=data.get("carrier") or shipment.carrier,
            tracking_number=data.get("tracking_number") or shipment.tracking_number,
            source=source,
            recorded_at=now,
        )
        try:
            with s.begin_nested():
                s.add(event)
        except IntegrityError:
            # The same sender's event, recorded at the same moment by another request.
            existing = _sender_event(s, shipment.id, sender_id) if sender_id else None
            if existing is None:
                raise
            return existing, False
        self._place(s, shipment, event, now)
        return event, True

    def _place(
        self, s: Session, shipment: TrackedShipment, event: TrackingEvent, now: datetime
    ) -> None:
        """Put an event where it belongs by ``occurred_at``: it passes its checkpoint,
        and it moves the shipment's status only if nothing later is known already."""
        if event.checkpoint and event.kind in PASSING_KINDS:
            key = name_key(event.checkpoint)
            checkpoint = next(
                (
                    c
                    for c in s.scalars(
                        select(ShipmentCheckpoint).where(
                            ShipmentCheckpoint.shipment_id == shipment.id
                        )
                    )
                    if name_key(c.name) == key
                ),
                None,
            )
            if checkpoint is not None and (
                checkpoint.passed_at is None or event.occurred_at < checkpoint.passed_at
            ):
                checkpoint.passed_at = event.occurred_at
        # A scan after the delivery (a carrier's belated "lost", a stray hub scan) says
        # nothing of the journey: it is kept, but the part's last news stays its arrival.
        after_arrival = (
            shipment.status == "delivered"
            and event.kind != "delivered"
            and shipment.delivered_at is not None
            and event.occurred_at > shipment.delivered_at
        )
        latest = not after_arrival and (
            shipment.last_event_at is None or event.occurred_at >= shipment.last_event_at
        )
        if latest:
            shipment.last_event_id = event.id
            shipment.last_event_at = event.occurred_at
        # The moves shipments' own state machine makes on the same event (it follows
        # these events too), so both services tell one story: a journey that ended
        # (delivered, lost, cancelled) stays ended, and a shipment not dispatched yet
        # is lost or held up only once it has left.
        before = shipment.status
        if event.kind == "delivered":
            # Arrival ends the journey, whatever scans arrive late about its middle;
            # a delivery of a planned shipment means its dispatch was not recorded.
            if shipment.status in SCANNED:
                shipment.status = "delivered"
                shipment.delivered_at = shipment.delivered_at or event.occurred_at
        elif latest and event.kind == "lost" and shipment.status in (*alerts.MOVING, "lost"):
            shipment.status = "lost"
            shipment.lost_note = event.note or shipment.lost_note
        elif latest and event.kind == "exception" and shipment.status == "in_transit":
            shipment.status = "exception"
        elif latest and event.kind in MOVEMENT_KINDS and shipment.status == "exception":
            shipment.status = "in_transit"
        shipment.updated_at = now
        s.flush()
        if before != "delivered" and shipment.status == "delivered":
            self._learn_transit(s, shipment)

    # ==================================================================================
    # What other services tell
    # ==================================================================================
    def apply_shipment(self, data: Mapping[str, Any], event_type: str) -> None:
        """``shipments.shipment.*``: the shipment as shipments shows it. A version not
        newer than the one known is stale (or a repeat) and changes nothing."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _shipment_for_update(s, data["id"], self.db.is_postgres)
            if shipment is not None and shipment.version >= data["version"]:
                return
            before = None
            if shipment is None:
                shipment = TrackedShipment(id=data["id"], first_seen_at=now)
                s.add(shipment)
            else:
                before = shipment.status
            times_before = (shipment.dispatched_at, shipment.delivered_at)
            destination = data.get("destination") or {}
            shipment.version = data["version"]
            shipment.status = _merged_status(before, data["status"], event_type)
            shipment.origin = data["origin"]
            shipment.origin_region = data.get("origin_region") or shipment.origin_region
            shipment.destination_site = destination.get("site")
            shipment.destination_warehouse = destination.get("warehouse")
            shipment.destination_region = destination.get("region")
            shipment.mode = data["mode"]
            shipment.carrier = data.get("carrier")
            shipment.tracking_number = data.get("tracking_number")
            shipment.job_id = data.get("job_id")
            shipment.priority = data.get("priority")
            shipment.owner = data.get("owner")
            shipment.required_by = data.get("required_by")
            shipment.promised_delivery_at = data.get("promised_delivery_at")
            shipment.dispatched_at = data.get("dispatched_at")
            if shipment.dispatched_at is not None and shipment.dispatch_heard_at is None:
                shipment.dispatch_heard_at = now
            shipment.delivered_at = data.get("delivered_at") or (
                shipment.delivered_at if shipment.status == "delivered" else None
            )
            if shipment.status == "lost" and shipment.lost_note is None:
                # Lost as reported before its dispatch was recorded: the report says why.
                shipment.lost_note = s.scalar(
                    select(TrackingEvent.note)
                    .where(TrackingEvent.shipment_id == shipment.id, TrackingEvent.kind == "lost")
                    .order_by(TrackingEvent.occurred_at.desc())
                    .limit(1)
                )
            shipment.updated_at = now
            s.flush()
            # A shipment first heard of has no lines, checkpoints or scans here yet.
            known = before is not None
            lines = self._replace_lines(s, shipment.id, data.get("lines") or [], known=known)
            checkpoints = self._merge_checkpoints(
                s, shipment.id, data.get("checkpoints") or [], known=known
            )
            job = None
            if shipment.job_id:
                # Held here so the judgement below finds it in the session, unread.
                job, _ = _touch_job(
                    s,
                    shipment.job_id,
                    now,
                    owner=shipment.owner,
                    site_name=shipment.destination_site,
                    site_region=shipment.destination_region,
                    required_by=shipment.required_by,
                    priority=shipment.priority,
                    authoritative=False,
                )
            s.flush()
            # A delivery scanned before tracking heard of the dispatch was learnt without
            # a transit (or with the scan's time): shipments' times fill it in.
            if shipment.status == "delivered" and (
                before != "delivered"
                or (shipment.dispatched_at, shipment.delivered_at) != times_before
            ):
                self._learn_transit(s, shipment)
            written = _Written(lines, checkpoints, first_seen=not known, job=job)
            lanes = _Lanes()
            self._after_change(tx, shipment, now, lanes, written=written)
            # A cancelled shipment whose parts waited for another is judged again: this
            # one may carry them now.
            for line in lines:
                if line.reservation_id:
                    for other in _shipments_carrying(s, line.reservation_id):
                        if other != shipment.id:
                            self._revisit_cancelled(tx, other, now, lanes)

    def _replace_lines(
        self, s: Session, shipment_id: str, lines: Sequence[Mapping], *, known: bool
    ) -> list[ShipmentLine]:
        if known:
            s.execute(delete(ShipmentLine).where(ShipmentLine.shipment_id == shipment_id))
        added = [
            ShipmentLine(
                shipment_id=shipment_id,
                part_number=line["part_number"],
                quantity=line["quantity"],
                reservation_id=line.get("reservation_id"),
            )
            for line in lines
        ]
        s.add_all(added)
        return added

    def _merge_checkpoints(
        self, s: Session, shipment_id: str, checkpoints: Sequence[Mapping], *, known: bool
    ) -> list[ShipmentCheckpoint]:
        """Shipments' plan of checkpoints, each passed at the earliest moment either
        service knows of (scans recorded before the plan arrived count too)."""
        passed: dict[str, datetime | None] = {}
        scanned: dict[str, datetime] = {}
        if known:
            passed = {
                name_key(c.name): c.passed_at
                for c in s.scalars(
                    select(ShipmentCheckpoint).where(ShipmentCheckpoint.shipment_id == shipment_id)
                )
            }
            for name, at in s.execute(
                select(TrackingEvent.checkpoint, func.min(TrackingEvent.occurred_at))
                .where(
                    TrackingEvent.shipment_id == shipment_id,
                    TrackingEvent.checkpoint.is_not(None),
                    TrackingEvent.kind.in_(PASSING_KINDS),
                )
                .group_by(TrackingEvent.checkpoint)
            ):
                key = name_key(name)
                scanned[key] = min(at, scanned.get(key, at))
            s.execute(
                delete(ShipmentCheckpoint).where(ShipmentCheckpoint.shipment_id == shipment_id)
            )
            s.flush()
        merged = []
        for seq, c in enumerate(checkpoints):
            key = name_key(c["name"])
            moments = [m for m in (c.get("passed_at"), passed.get(key)) if m is not None]
            if scanned.get(key) is not None:
                moments.append(scanned[key])
            merged.append(
                ShipmentCheckpoint(
                    shipment_id=shipment_id,
                    seq=seq,
                    name=c["name"],
                    due_at=c["due_at"],
                    passed_at=min(moments) if moments else None,
                )
            )
        s.add_all(merged)
        s.flush()
        return merged

    def apply_reservation(self, data: Mapping[str, Any]) -> None:
        """``inventory.reservation.*``: the job's parts. A confirmed reservation that
        replaces a lost one answers a rescue; a lost one may start a rescue."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            # Locked, so two deliveries of this reservation at once apply in turn.
            reservation = s.get(
                JobReservation, data["id"], with_for_update=self.db.is_postgres or None
            )
            if reservation is not None and reservation.version >= data["version"]:
                return
            first_seen = reservation is None
            if reservation is None:
                reservation = JobReservation(id=data["id"], first_seen_at=now)
                s.add(reservation)
            site = data["site"]
            reservation.job_id = data["job_id"]
            reservation.part_number = data["part_number"]
            reservation.quantity = data["quantity"]
            reservation.warehouse = data["warehouse"]
            reservation.warehouse_region = data.get("warehouse_region")
            reservation.status = data["status"]
            reservation.priority = data["priority"]
            reservation.required_by = data["required_by"]
            reservation.owner = data["owner"]
            reservation.site_name = site["name"]
            reservation.site_region = site["region"]
            # Kept once known: a replacement made by hand is known as one only here.
            reservation.replaces = data.get("replaces") or reservation.replaces
            reservation.shipment_id = data.get("shipment_id")
            reservation.version = data["version"]
            reservation.updated_at = now
            job, before = _touch_job(
                s,
                reservation.job_id,
                now,
                owner=reservation.owner,
                site_name=reservation.site_name,
                site_region=reservation.site_region,
                required_by=reservation.required_by,
                priority=reservation.priority,
                # A new reservation says what the job is now (its owner, its time);
                # later events of older ones do not take that back.
                authoritative=first_seen,
            )
            s.flush()
            # The job's shipments are judged against its required-by, which may have moved.
            revisit = _shipments_carrying(s, reservation.id)
            if before is not None and before != (job.owner, job.required_by):
                # A job handed over or moved: every shipment of it names the new owner
                # and is judged against the new time.
                revisit += _shipments_to_judge_again(s, job.job_id)
            rescue = None
            if reservation.replaces and reservation.status == "confirmed":
                rescue = s.get(Rescue, reservation.replaces)
            elif first_seen and before is not None and reservation.status == "confirmed":
                # A replacement people made by hand (from stock received since, say):
                # the first new reservation of a known job's part answers a rescue that
                # found nothing, was left to them, or whose replacement was set aside.
                set_aside = select(JobReservation.id).where(JobReservation.status.in_(SET_ASIDE))
                rescue = s.scalar(
                    select(Rescue)
                    .where(
                        Rescue.job_id == reservation.job_id,
                        Rescue.part_number == reservation.part_number,
                        or_(
                            Rescue.status.in_(("rejected", "not_requested")),
                            Rescue.replacement_id.in_(set_aside),
                        ),
                    )
                    .order_by(Rescue.requested_at)
                    .limit(1)
                )
            if (
                rescue is not None
                and rescue.replacement_id != reservation.id
                and _still_wanted(s, rescue)
            ):
                reservation.replaces = rescue.lost_reservation_id
                rescue.status = "confirmed"
                rescue.replacement_id = reservation.id
                rescue.warehouse = reservation.warehouse
                rescue.answered_at = now
                s.flush()
                revisit.append(rescue.shipment_id)
            if reservation.status == "lost":
                shipment_id = reservation.shipment_id or _shipment_of(s, reservation.id)
                needs = _needs_of_reservation(reservation, job)
                self._rescue(tx, reservation.id, needs, shipment_id)
                revisit.append(shipment_id)
            if reservation.replaces:
                # A replacement released, taken or lost changes what its lost shipment's
                # alert must say.
                revisit += s.scalars(
                    select(Rescue.shipment_id).where(Rescue.replacement_id == reservation.id)
                ).all()
            lanes = _Lanes()
            for shipment_id in dict.fromkeys(revisit):
                self._revisit(tx, shipment_id, now, lanes)
            self._reconcile_taken(tx, job, now)

    def reservation_rejected(self, data: Mapping[str, Any], envelope: Mapping[str, Any]) -> None:
        """``inventory.reservation.rejected``: if it answers one of our rescues, the
        lost alert says plainly what inventory has instead, or that nothing exists."""
        now = self.clock.now()
        ids = {i for i in (envelope.get("correlationid"), data.get("command_id")) if i}
        with self.db.transaction() as tx:
            s = tx.session
            rescue = s.scalar(select(Rescue).where(Rescue.command_id.in_(ids)))
            if rescue is None or rescue.status != "requested":
                return
            rescue.status = "rejected"
            rescue.detail = alerts.rejection_words(rescue.part_number, rescue.quantity, data)
            rescue.answered_at = now
            s.flush()
            self._revisit(tx, rescue.shipment_id, now, _Lanes())

    def apply_warehouse(self, data: Mapping[str, Any]) -> None:
        with self.db.transaction() as tx:
            warehouse = tx.session.get(KnownWarehouse, data["code"])
            if warehouse is None:
                warehouse = KnownWarehouse(code=data["code"])
                tx.session.add(warehouse)
            warehouse.name = data["name"]
            warehouse.region = data["region"]
            warehouse.kind = data["kind"]

    def apply_stock_arrival(self, stock: Mapping[str, Any]) -> None:
        """``inventory.stock.received``/``.adjusted``: a part that no warehouse had
        when a rescue asked for it has come into stock. The lost alert says where and
        when, for people to reserve it (a reservation made by hand answers the rescue);
        taking it by itself would race the very reservation they are about to make.
        A refusal that named stock elsewhere (spread, or held by routine work) keeps
        its words, and the first arrival is the one told."""
        if stock["available"] <= 0:
            return
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            still_lost = select(Alert.shipment_id).where(
                Alert.kind == "lost", Alert.status.in_(alerts.ACTIVE)
            )
            rescues = s.scalars(
                select(Rescue).where(
                    Rescue.part_number == stock["part_number"],
                    Rescue.status == "rejected",
                    Rescue.detail.is_(None),  # nothing anywhere, as it was refused
                    Rescue.shipment_id.in_(still_lost),
                )
            ).all()
            lanes = _Lanes()
            origin = _warehouse_region(s, stock["warehouse"])
            for rescue in rescues:
                lost = s.get(TrackedShipment, rescue.shipment_id) if rescue.shipment_id else None
                job = s.get(Job, rescue.job_id)
                arrival = None
                if origin is not None and lost is not None and lost.destination_region:
                    arrival = self._estimate_leaving_now(
                        s, origin, lost.destination_region, now, lanes
                    )
                rescue.detail = alerts.arrival_words(
                    rescue.part_number,
                    rescue.quantity,
                    stock["warehouse"],
                    stock["available"],
                    now,
                    arrival=arrival,
                    required_by=job.required_by if job else None,
                )
                s.flush()
                self._revisit(tx, rescue.shipment_id, now, lanes)

    def apply_stock_signal(
        self, data: Mapping[str, Any], envelope: Mapping[str, Any], *, low: bool
    ) -> None:
        """``inventory.stock.low`` raises a ``low_stock`` alert, ``.replenished`` resolves
        it; the later of the two (by the time they were sent) stands."""
        now = self.clock.now()
        signalled_at = _event_time(envelope) or now
        problem = alerts.low_stock_problem(
            data["part_number"], data["warehouse"], data["available"], data.get("reorder_point")
        )
        with self.db.transaction() as tx:
            s = tx.session
            # Locked: signals about one stock line handled at once (more handler threads
            # or workers) are judged one after the other, the later one standing.
            signal = s.get(StockSignal, problem.subject, with_for_update=self.db.is_postgres)
            if signal is not None and signal.signalled_at > signalled_at:
                return
            if signal is None:
                signal = StockSignal(subject=problem.subject)
                s.add(signal)
            signal.low = low
            signal.signalled_at = signalled_at
            active = _active_alert(s, problem.subject, "low_stock")
            if low and active is None:
                self._raise(tx, problem, now, shipment_id=None, job_id=None, owner=None)
            elif low and active is not None and active.message != problem.message:
                active.message = problem.message
                active.updated_at = now
                s.flush()
                tx.publish("tracking.alert.updated", subject=active.id, data=alert_resource(active))
            elif not low and active is not None:
                self._resolve(tx, active, now)

    # ==================================================================================
    # The scheduler
    # ==================================================================================
    def scan(
        self, now: datetime | None = None, *, pause: Callable[[], None] | None = None
    ) -> dict[str, int]:
        """Judge every shipment still on its way (every lost one whose rescue is not
        settled, and every cancelled one whose parts wait for another): ETAs, alerts,
        and shipments silent for so long they are lost. ``pause`` is called before
        each shipment (the worker's: messages go first), so each is judged at its own
        moment unless ``now`` is given."""
        with self.db.reading() as s:
            ids = s.scalars(
                select(TrackedShipment.id)
                .where(
                    or_(
                        TrackedShipment.status.in_(SCANNED),
                        TrackedShipment.id.in_(
                            select(Alert.shipment_id).where(
                                Alert.kind == "lost", Alert.status.in_(alerts.ACTIVE)
                            )
                        ),
                        # Cancelled, with parts still held for their job: as time
                        # passes they may no longer make it once shipped.
                        (TrackedShipment.status == "cancelled")
                        & TrackedShipment.id.in_(
                            select(ShipmentLine.shipment_id)
                            .join(JobReservation, JobReservation.id == ShipmentLine.reservation_id)
                            .where(JobReservation.status == "confirmed")
                        ),
                    )
                )
                .order_by(TrackedShipment.id)
            ).all()
        lanes = _Lanes()
        lost = 0
        for shipment_id in ids:
            if pause is not None:
                pause()
            moment = now or self.clock.now()
            with self.db.transaction() as tx:
                shipment = _shipment_for_update(tx.session, shipment_id, self.db.is_postgres)
                if shipment is None:
                    continue
                if self._after_change(tx, shipment, moment, lanes, may_declare_lost=True):
                    lost += 1
        return {"shipments": len(ids), "declared_lost": lost}

    # ==================================================================================
    # Judging a shipment
    # ==================================================================================
    def _revisit(
        self, tx: Transaction, shipment_id: str | None, now: datetime, lanes: _Lanes
    ) -> None:
        if shipment_id is None:
            return
        shipment = _shipment_for_update(tx.session, shipment_id, self.db.is_postgres)
        if shipment is not None:
            self._after_change(tx, shipment, now, lanes)

    def _revisit_cancelled(
        self, tx: Transaction, shipment_id: str, now: datetime, lanes: _Lanes
    ) -> None:
        shipment = _shipment_for_update(tx.session, shipment_id, self.db.is_postgres)
        if shipment is not None and shipment.status == "cancelled":
            self._after_change(tx, shipment, now, lanes)

    def _after_change(
        self,
        tx: Transaction,
        shipment: TrackedShipment,
        now: datetime,
        lanes: _Lanes,
        *,
        may_declare_lost: bool = False,
        written: _Written | None = None,
    ) -> bool:
        """Judge the shipment now: take it for lost if it has been silent too long
        (only the scheduler does), start the rescue of a lost one, announce an ETA that
        moved, and bring its alerts in line. Returns whether it was declared lost."""
        s = tx.session
        snap = self._snapshot(s, shipment, now, lanes, written=written)
        declared = False
        if may_declare_lost:
            why = alerts.lost_by_silence(snap.situation, now)
            if why is not None:
                event = TrackingEvent(
                    id=str(uuid.uuid4()),
                    shipment_id=shipment.id,
                    kind="lost",
                    occurred_at=now,
                    note=why,
                    carrier=shipment.carrier,
                    tracking_number=shipment.tracking_number,
                    source=SOURCE,
                    recorded_at=now,
                )
                s.add(event)
                s.flush()
                self._place(s, shipment, event, now)
                tx.publish(
                    "tracking.event.recorded", subject=shipment.id, data=event_resource(event)
                )
                declared = True
        if shipment.status == "lost":
            for line in snap.lines:
                if line.reservation_id and s.get(Rescue, line.reservation_id) is None:
                    needs = _needs_of_line(s, shipment, line)
                    if needs is not None:
                        self._rescue(tx, line.reservation_id, needs, shipment.id)
        if declared or shipment.status == "lost":
            snap = self._snapshot(s, shipment, now, lanes, written=written)
        eta_moved = eta.moved(shipment.announced_eta, snap.estimate.eta, self.eta_step_minutes)
        if eta_moved:
            tx.publish(
                "tracking.eta.updated",
                subject=shipment.id,
                data={
                    **eta_resource(snap),
                    "job_id": shipment.job_id,
                    "previous_eta": shipment.announced_eta,
                },
            )
            shipment.announced_eta = snap.estimate.eta
        first_seen = written is not None and written.first_seen
        situation = snap.situation
        if shipment.status == "cancelled":
            situation = self._still_waiting(s, snap, now, lanes)
        self._reconcile(
            tx,
            snap,
            alerts.shipment_problems(situation, now),
            now,
            eta_moved,
            first_seen=first_seen,
        )
        # A replacement on its way changes what the lost shipment's alert says (only a
        # reservation that replaces another can answer a rescue).
        replaced = [r.id for r in snap.reservations if r.replaces]
        if replaced:
            for lost_shipment_id in s.scalars(
                select(Rescue.shipment_id).where(Rescue.replacement_id.in_(replaced))
            ).all():
                self._revisit(tx, lost_shipment_id, now, lanes)
        return declared

    def _still_waiting(
        self, s: Session, snap: _Snapshot, now: datetime, lanes: _Lanes
    ) -> alerts.ShipmentSituation:
        """A cancelled shipment as the parts still held for its job see it: each
        confirmed reservation that no other shipment carries yet waits, judged as the
        job view judges it (not shipped yet, against its own required-by), and the
        worst of them is the shipment's risk; on_track when none waits."""
        waiting = [
            r
            for r in snap.reservations
            if r.status == "confirmed" and _shipment_of(s, r.id) == snap.shipment.id
        ]
        worst: tuple[str, eta.Estimate, JobReservation] | None = None
        for r in waiting:
            estimate = self._unshipped_estimate(s, r, now, lanes, cancelled=snap.shipment)
            judged = eta.risk("planned", estimate, r.required_by, None)
            if worst is None or RISK_SEVERITY[judged] > RISK_SEVERITY[worst[0]]:
                worst = (judged, estimate, r)
        if worst is None:
            return snap.situation
        judged, estimate, r = worst
        return dataclasses.replace(
            snap.situation,
            risk=judged,
            estimate=estimate,
            required_by=r.required_by,
            parts=[w.part_number for w in waiting],
        )

    def _snapshot(
        self,
        s: Session,
        shipment: TrackedShipment,
        now: datetime,
        lanes: _Lanes,
        *,
        with_replacements: bool = True,
        written: _Written | None = None,
    ) -> _Snapshot:
        if written is not None:
            checkpoints, lines = written.checkpoints, written.lines
        else:
            checkpoints = list(
                s.scalars(
                    select(ShipmentCheckpoint)
                    .where(ShipmentCheckpoint.shipment_id == shipment.id)
                    .order_by(ShipmentCheckpoint.seq)
                )
            )
            lines = list(
                s.scalars(
                    select(ShipmentLine)
                    .where(ShipmentLine.shipment_id == shipment.id)
                    .order_by(ShipmentLine.id)
                )
            )
        reservations = _reservations(s, [ln.reservation_id for ln in lines if ln.reservation_id])
        job = s.get(Job, shipment.job_id) if shipment.job_id else None
        job_id = shipment.job_id
        # Judged against its own time, or its job's when it carries the job's
        # reservations: another shipment of the job may have another time.
        required_by = shipment.required_by
        first_needed: JobReservation | None = None
        if reservations and job is None:
            # Reservations of jobs it does not name (made by hand for several): judged
            # against the job that needs its part first, whose owner its alerts name.
            needed = [(_needed_by(s, r), r) for r in reservations]
            required_by, first_needed = min(needed, key=lambda pair: pair[0])
            job = s.get(Job, first_needed.job_id)
            job_id = job_id or first_needed.job_id
        elif reservations:
            required_by = job.required_by or min(r.required_by for r in reservations)
        # The job's reservations say who owns it now (a job handed over keeps its
        # shipments); the shipment's own owner is for jobs no reservation told of.
        owner = (job.owner if job else None) or shipment.owner
        if owner is None and reservations:
            owner = (first_needed or reservations[0]).owner
        last_event = (
            s.get(TrackingEvent, shipment.last_event_id) if shipment.last_event_id else None
        )
        exception_event = last_event if last_event and last_event.kind == "exception" else None
        points = [eta.Checkpoint(c.name, c.due_at, c.passed_at) for c in checkpoints]
        status, dispatched_at = shipment.status, shipment.dispatched_at
        first_scan = (
            _first_movement_at(s, shipment.id)
            if status == "planned" and last_event is not None
            else None
        )
        if first_scan is not None:
            # Scanned on its way before anyone recorded the dispatch: it left at its
            # first scan, and its ETA counts from there, not from "leaving now".
            status, dispatched_at = "in_transit", first_scan
        # Out for delivery as the latest word: a scan after it (a failed attempt, back
        # at the depot) says it is not on its last round any more.
        out_for_delivery_at = (
            last_event.occurred_at
            if last_event and last_event.kind == "out_for_delivery" and status in alerts.MOVING
            else None
        )
        facts = eta.ShipmentFacts(
            mode=shipment.mode,
            status=status,
            dispatched_at=dispatched_at,
            promised_delivery_at=shipment.promised_delivery_at,
            delivered_at=shipment.delivered_at,
            checkpoints=points,
            exception_at=exception_event.occurred_at if exception_event else None,
            out_for_delivery_at=out_for_delivery_at,
            same_region=_same_region(s, shipment),
        )
        estimate = eta.estimate(facts, self._lane(s, _lane_key(s, shipment), lanes), now)
        risk = eta.risk(shipment.status, estimate, required_by, shipment.delivered_at)
        replacements: list[alerts.Replacement] = []
        if with_replacements and shipment.status == "lost":
            replacements = self._replacements(s, shipment, lines, now, lanes)
        situation = alerts.ShipmentSituation(
            shipment_id=shipment.id,
            status=shipment.status,
            mode=shipment.mode,
            estimate=estimate,
            risk=risk,
            job_id=job_id,
            owner=owner,
            parts=[ln.part_number for ln in lines],
            required_by=required_by,
            dispatched_at=shipment.dispatched_at,
            dispatch_heard_at=shipment.dispatch_heard_at,
            delivered_at=shipment.delivered_at,
            last_scan_at=shipment.last_event_at,
            exception_note=exception_event.note if exception_event else None,
            lost_note=shipment.lost_note,
            checkpoints=points,
            replacements=replacements,
            destination_site=shipment.destination_site,
            destination_warehouse=shipment.destination_warehouse,
        )
        if reservations and alerts.in_trouble(situation, now):
            situation = dataclasses.replace(situation, elsewhere=_elsewhere(s, shipment.id))
        return _Snapshot(
            shipment,
            now,
            checkpoints,
            lines,
            reservations,
            estimate,
            required_by,
            risk,
            situation,
            last_event,
        )

    def _replacements(
        self,
        s: Session,
        shipment: TrackedShipment,
        lines: Sequence[ShipmentLine],
        now: datetime,
        lanes: _Lanes,
    ) -> list[alerts.Replacement]:
        ids = [ln.reservation_id for ln in lines if ln.reservation_id]
        rescues = s.scalars(
            select(Rescue)
            .where(or_(Rescue.shipment_id == shipment.id, Rescue.lost_reservation_id.in_(ids)))
            .order_by(Rescue.requested_at, Rescue.lost_reservation_id)
        ).all()
        found = []
        for rescue in rescues:
            arrival, shipment_status, reservation_status, replaced_again = None, None, None, False
            if rescue.replacement_id:
                arrival, shipment_status = self._reservation_arrival(
                    s, rescue.replacement_id, now, lanes
                )
                replacement = s.get(JobReservation, rescue.replacement_id)
                reservation_status = replacement.status if replacement else None
                # A replacement lost in turn has a rescue of its own.
                again = s.get(Rescue, rescue.replacement_id)
                replaced_again = again is not None and again.status in ("requested", "confirmed")
            found.append(
                alerts.Replacement(
                    part_number=rescue.part_number,
                    status=rescue.status,
                    warehouse=rescue.warehouse,
                    eta=arrival,
                    shipment_status=shipment_status,
                    detail=rescue.detail,
                    reservation_status=reservation_status,
                    replaced_again=replaced_again,
                )
            )
        return found

    def _reservation_arrival(
        self, s: Session, reservation_id: str, now: datetime, lanes: _Lanes
    ) -> tuple[datetime | None, str | None]:
        """When a reservation's part should arrive: from its shipment when one is
        planned, else from the lanes between its warehouse's region and the site's."""
        shipment_id = _shipment_of(s, reservation_id)
        shipment = s.get(TrackedShipment, shipment_id) if shipment_id else None
        if shipment is not None:
            snap = self._snapshot(s, shipment, now, lanes, with_replacements=False)
            return snap.estimate.eta, shipment.status
        reservation = s.get(JobReservation, reservation_id)
        if reservation is None:
            return None, None
        return self._unshipped_estimate(s, reservation, now, lanes).eta, None

    def _unshipped_estimate(
        self,
        s: Session,
        reservation: JobReservation,
        now: datetime,
        lanes: _Lanes,
        *,
        cancelled: TrackedShipment | None = None,
    ) -> eta.Estimate:
        """``cancelled``: the shipment that was to carry it. Its next one is judged as
        leaving now the way that one was to go: cancelling a shipment must not make a
        part look sooner by borrowing other modes' history."""
        if cancelled is not None:
            facts = eta.ShipmentFacts(
                mode=cancelled.mode, status="planned", same_region=_same_region(s, cancelled)
            )
            return eta.estimate(facts, self._lane(s, _lane_key(s, cancelled), lanes), now)
        origin = reservation.warehouse_region or _warehouse_region(s, reservation.warehouse)
        return self._estimate_leaving_now(
            s, origin or reservation.warehouse, reservation.site_region, now, lanes
        )

    def _estimate_leaving_now(
        self, s: Session, origin: str, destination: str | None, now: datetime, lanes: _Lanes
    ) -> eta.Estimate:
        """A part leaving a region now by carrier, from the lanes between the two."""
        stats = self._region_lane(s, origin, destination, lanes)
        facts = eta.ShipmentFacts(
            mode="carrier",
            status="planned",
            same_region=None if destination is None else name_key(origin) == name_key(destination),
        )
        return eta.estimate(facts, stats, now)

    def _lane(self, s: Session, key: LaneKey, lanes: _Lanes) -> eta.LaneStats:
        if key not in lanes.stats:
            origin, destination, mode, carrier = key
            conditions = [
                LaneTransit.origin_region == origin,
                LaneTransit.destination_region == destination,
                LaneTransit.mode == mode,
            ]
            # A carrier shipment gets its carrier at dispatch; until then every
            # carrier's deliveries on the route say more than none.
            if carrier or mode != "carrier":
                conditions.append(LaneTransit.carrier == carrier)
            lanes.stats[key] = self._cached_lane_stats(s, key, *conditions)
        return lanes.stats[key]

    def _region_lane(
        self, s: Session, origin: str, destination: str | None, lanes: _Lanes
    ) -> eta.LaneStats:
        origin = name_key(origin)
        destination = name_key(destination) if destination is not None else None
        key = (origin, destination)
        if key not in lanes.stats:
            lanes.stats[key] = self._cached_lane_stats(
                s,
                key,
                LaneTransit.origin_region == origin,
                LaneTransit.destination_region == destination,
            )
        return lanes.stats[key]

    def _cached_lane_stats(self, s: Session, key: Any, *conditions: Any) -> eta.LaneStats:
        stats = self._lane_cache.get(key)
        if stats is None:
            stats = _lane_stats(s, *conditions)
            self._lane_cache.put(key, stats)
        return stats

    def _learn_transit(self, s: Session, shipment: TrackedShipment) -> None:
        """A delivered shipment adds its transit time to its lane's history."""
        if shipment.dispatched_at is None or shipment.delivered_at is None:
            return
        hours = _hours(shipment.delivered_at - shipment.dispatched_at)
        if hours <= 0:
            return
        origin, destination, mode, carrier = _lane_key(s, shipment)
        checkpoints = list(
            s.scalars(
                select(ShipmentCheckpoint)
                .where(ShipmentCheckpoint.shipment_id == shipment.id)
                .order_by(ShipmentCheckpoint.seq)
            )
        )
        passed = [c for c in checkpoints if c.passed_at is not None]
        midway = final = None
        if passed:
            middle = passed[(len(passed) - 1) // 2]
            assert middle.passed_at is not None
            midway = _hours(middle.passed_at - middle.due_at)
            plan = shipment.promised_delivery_at or max(c.due_at for c in checkpoints)
            final = _hours(shipment.delivered_at - plan)
        transit = s.get(LaneTransit, shipment.id) or LaneTransit(shipment_id=shipment.id)
        transit.origin_region = origin
        transit.destination_region = destination
        transit.mode = mode
        transit.carrier = carrier
        transit.hours = hours
        transit.promised_hours = (
            _hours(shipment.promised_delivery_at - shipment.dispatched_at)
            if shipment.promised_delivery_at
            else None
        )
        transit.midway_delay_hours = midway
        transit.final_delay_hours = final
        news = s.scalars(
            select(TrackingEvent.occurred_at).where(TrackingEvent.shipment_id == shipment.id)
        ).all()
        transit.longest_silence_hours = eta.longest_silence_hours(
            shipment.dispatched_at, shipment.delivered_at, news
        )
        transit.delivered_at = shipment.delivered_at
        s.add(transit)
        s.flush()
        self._lane_cache.forget(
            (origin, destination, mode, carrier),
            (origin, destination, mode, ""),
            (origin, destination),
        )

    # ==================================================================================
    # The lost-part rescue
    # ==================================================================================
    def _rescue(
        self,
        tx: Transaction,
        lost_reservation_id: str,
        needs: Mapping[str, Any],
        shipment_id: str | None,
    ) -> None:
        """Ask inventory, once, for a replacement of a lost reservation of a
        machine_down or urgent job, from whichever warehouse can deliver first (no
        ``warehouse`` in the command: inventory picks by lane)."""
        s = tx.session
        if s.get(Rescue, lost_reservation_id) is not None:
            return
        rescue = Rescue(
            lost_reservation_id=lost_reservation_id,
            shipment_id=shipment_id,
            job_id=needs["job_id"],
            part_number=needs["part_number"],
            quantity=needs["quantity"],
            status="not_requested",
            requested_at=self.clock.now(),
        )
        if needs["priority"] in RESCUED_PRIORITIES:
            rescue.status = "requested"
            rescue.command_id = tx.send_command(
                "inventory.reserve",
                subject=needs["job_id"],
                data={
                    "request_id": f"replace-{lost_reservation_id}",
                    "replaces": lost_reservation_id,
                    **{k: _jsonable(v) for k, v in needs.items()},
                },
            )
        s.add(rescue)
        s.flush()

    # ==================================================================================
    # Alerts
    # ==================================================================================
    def _reconcile(
        self,
        tx: Transaction,
        snap: _Snapshot,
        problems: Iterable[alerts.Problem],
        now: datetime,
        eta_moved: bool,
        *,
        first_seen: bool = False,
    ) -> None:
        s = tx.session
        shipment = snap.shipment
        # A shipment first heard of in this transaction has no alerts yet.
        active = (
            {}
            if first_seen
            else {
                (a.subject, a.kind): a
                for a in s.scalars(
                    select(Alert).where(
                        Alert.shipment_id == shipment.id, Alert.status.in_(alerts.ACTIVE)
                    )
                )
            }
        )
        wanted = {(p.subject, p.kind): p for p in problems}
        for key, alert in active.items():
            if key not in wanted:
                self._resolve(tx, alert, now)
        if _troubled(wanted) and not _troubled(active):
            self._ask_where_else(tx, snap, now)
        job_id, owner = snap.situation.job_id, snap.situation.owner
        for key, problem in wanted.items():
            alert = active.get(key)
            if alert is None:
                self._raise(tx, problem, now, shipment_id=shipment.id, job_id=job_id, owner=owner)
                continue
            handed_over = owner is not None and alert.owner != owner
            changed = alert.fingerprint != _kept(problem) or eta_moved or handed_over
            if changed and alert.message != problem.message:
                alert.message = problem.message
                alert.fingerprint = _kept(problem)
                alert.job_id = job_id or alert.job_id
                alert.owner = owner or alert.owner
                alert.updated_at = now
                s.flush()
                tx.publish("tracking.alert.updated", subject=alert.id, data=alert_resource(alert))

    def _ask_where_else(self, tx: Transaction, snap: _Snapshot, now: datetime) -> None:
        """A shipment carrying reservations got into trouble: ask inventory where else
        each of its parts could come from for the site (``inventory.locate``); the
        answer re-words its alert."""
        s = tx.session
        if not snap.reservations:
            return
        needed: dict[str, int] = {}
        for r in snap.reservations:
            needed[r.part_number] = needed.get(r.part_number, 0) + r.quantity
        region = snap.shipment.destination_region or snap.reservations[0].site_region
        site = snap.shipment.destination_site or snap.reservations[0].site_name
        for part_number, quantity in needed.items():
            sourcing = s.get(Sourcing, (snap.shipment.id, part_number)) or Sourcing(
                shipment_id=snap.shipment.id, part_number=part_number
            )
            sourcing.quantity, sourcing.status = quantity, "requested"
            sourcing.alternatives, sourcing.asked_at, sourcing.answered_at = None, now, None
            s.add(sourcing)
            tx.send_command(
                "inventory.locate",
                subject=part_number,
                data={
                    "part_number": part_number,
                    "quantity": quantity,
                    "site": {"name": site, "region": region},
                    "shipment_id": snap.shipment.id,
                },
            )
        s.flush()

    def apply_located(self, data: Mapping[str, Any]) -> None:
        """``inventory.stock.located``: where else a part of a shipment in trouble could
        come from. Its alerts are re-worded to say so."""
        if not data.get("shipment_id"):
            return
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            sourcing = s.get(Sourcing, (data["shipment_id"], data["part_number"]))
            if sourcing is None or sourcing.quantity != data["quantity"]:
                return
            sourcing.status, sourcing.answered_at = "answered", now
            sourcing.alternatives = json.dumps(
                [
                    {**a, "estimated_arrival": a["estimated_arrival"].isoformat()}
                    for a in data["alternatives"]
                ]
            )
            s.flush()
            self._revisit(tx, data["shipment_id"], now, _Lanes())

    def _reconcile_taken(self, tx: Transaction, job: Job, now: datetime) -> None:
        """One at_risk alert per reservation of the job taken for a machine-down job
        elsewhere (preempted) while nothing reserved since replaces it; it resolves
        when a new reservation of that part for the job appears. A reservation
        released is people's own decision: no alert."""
        s = tx.session
        reservations = _job_reservations(s, job.job_id)
        taken = _taken_back(reservations)
        for r in reservations:
            if r.status != "preempted":
                continue
            active = _active_alert(s, r.id, "at_risk")
            if r.id not in taken:
                if active is not None:
                    self._resolve(tx, active, now)
                continue
            problem = alerts.taken_problem(
                r.id,
                job_id=job.job_id,
                owner=job.owner,
                part_number=r.part_number,
                quantity=r.quantity,
                warehouse=r.warehouse,
                required_by=job.required_by or r.required_by,
            )
            if active is None:
                self._raise(tx, problem, now, shipment_id=None, job_id=job.job_id, owner=job.owner)
            elif active.message != problem.message:
                active.message = problem.message
                active.fingerprint = _kept(problem)
                active.owner = job.owner or active.owner
                active.updated_at = now
                s.flush()
                tx.publish("tracking.alert.updated", subject=active.id, data=alert_resource(active))

    def _raise(
        self,
        tx: Transaction,
        problem: alerts.Problem,
        now: datetime,
        *,
        shipment_id: str | None,
        job_id: str | None,
        owner: str | None,
    ) -> None:
        alert = Alert(
            id=str(uuid.uuid4()),
            kind=problem.kind,
            status="open",
            subject=problem.subject,
            shipment_id=shipment_id,
            job_id=job_id,
            owner=owner,
            message=problem.message,
            fingerprint=_kept(problem),
            raised_at=now,
            updated_at=now,
        )
        try:
            with tx.session.begin_nested():
                tx.session.add(alert)
        except IntegrityError:
            return  # raised a moment ago by another worker: one open alert is enough
        tx.publish("tracking.alert.raised", subject=alert.id, data=alert_resource(alert))

    def _resolve(self, tx: Transaction, alert: Alert, now: datetime) -> None:
        # ``now`` was read when the use case began, maybe before it waited for the
        # shipment's row while another raised this alert, or on a host whose clock is a
        # little behind: an alert is never resolved before it was raised.
        resolved_at = max(now, alert.raised_at)
        alert.status = "resolved"
        alert.resolved_at = resolved_at
        alert.updated_at = max(resolved_at, alert.updated_at)
        tx.session.flush()
        tx.publish("tracking.alert.resolved", subject=alert.id, data=alert_resource(alert))

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """How many alerts there are by (kind, status): what the metrics show."""
        with self.db.reading() as session:
            rows = session.execute(
                select(Alert.kind, Alert.status, func.count()).group_by(Alert.kind, Alert.status)
            ).all()
        return {(kind, status): count for kind, status, count in rows}

    def list_alerts(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        job_id: str | None = None,
        owner: str | None = None,
        shipment_id: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> Page:
        query = select(Alert)
        for column, value in (
            (Alert.status, status),
            (Alert.kind, kind),
            (Alert.job_id, job_id),
            # A person's name is theirs in any case, as the pages take it.
            (func.lower(Alert.owner), owner and " ".join(owner.split()).lower()),
            (Alert.shipment_id, shipment_id),
        ):
            if value:
                query = query.where(column == value)
        with self.db.reading() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(Alert.raised_at.desc(), Alert.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
            return Page([alert_resource(a) for a in rows], total)

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        with self.db.reading() as s:
            alert = s.get(Alert, alert_id)
            if alert is None:
                raise NotFound(f"no alert {alert_id}")
            return alert_resource(alert)

    def acknowledge_alert(
        self, alert_id: str, note: str | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Someone has seen it: it stays visible (acknowledged) until resolved."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            query = select(Alert).where(Alert.id == alert_id)
            if self.db.is_postgres:
                query = query.with_for_update()
            alert = tx.session.scalar(query)
            if alert is None:
                raise NotFound(f"no alert {alert_id}")
            if alert.status == "resolved":
                raise Conflict(
                    f"alert {alert_id} is resolved already; only an open alert is acknowledged",
                    current_status=alert.status,
                )
            if alert.status == "open":
                alert.status = "acknowledged"
                alert.acknowledged_at = now
                alert.acknowledged_by = actor
                alert.note = note
                alert.updated_at = now
                tx.session.flush()
                tx.publish(
                    "tracking.alert.acknowledged", subject=alert.id, data=alert_resource(alert)
                )
            return alert_resource(alert)

    # ==================================================================================
    # Reads: ETAs, jobs, the control tower
    # ==================================================================================
    def shipment_eta(self, shipment_id: str, *, wait_for_shipment: bool = False) -> dict[str, Any]:
        return self._once_heard_of(
            lambda: self._shipment_eta(shipment_id),
            lambda s: s.scalar(_shipment_id_query(shipment_id)),
            wait_for_shipment,
        )

    def _shipment_eta(self, shipment_id: str) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.reading() as s:
            shipment = s.get(TrackedShipment, shipment_id)
            if shipment is None:
                raise NotFound(f"no shipment {shipment_id}")
            return eta_resource(self._snapshot(s, shipment, now, _Lanes()))

    def job_view(self, job_id: str, *, wait_for_job: bool = False) -> dict[str, Any]:
        """The job as its owner needs it: each part, where it is, when it arrives.
        ``wait_for_job``: a job whose first reservation was just made may still be on
        its way from inventory; wait a moment for it before answering that it is unknown."""
        return self._once_heard_of(
            lambda: self._job_view_now(job_id),
            lambda s: s.scalar(select(Job.job_id).where(Job.job_id == job_id)),
            wait_for_job,
        )

    def _job_view_now(self, job_id: str) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.reading() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            return self._job_view(s, job, now, _Lanes())

    def list_jobs(
        self, *, open_only: bool = True, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """Every job with its risk, the worst first; ``open_only``: those with a part
        still to arrive (or lost); ``owner``: those someone holds now (in any case)."""
        now = self.clock.now()
        lanes = _Lanes()
        with self.db.reading() as s:

            def held(view: dict[str, Any]) -> bool:
                return owner is None or name_key(view["owner"] or "") == name_key(owner)

            if not open_only:
                views = [self._job_view(s, job, now, lanes) for job in s.scalars(select(Job))]
                return sorted(filter(held, views), key=_job_urgency)
            waiting = or_(
                Job.job_id.in_(
                    select(JobReservation.job_id).where(
                        JobReservation.status.in_(("confirmed", "issued", "lost"))
                    )
                ),
                Job.job_id.in_(
                    select(TrackedShipment.job_id).where(
                        TrackedShipment.status.in_((*SCANNED, "lost"))
                    )
                ),
            )
            # A job whose part was taken for another job is open while nothing
            # replaces it (its view says so).
            preempted = Job.job_id.in_(
                select(JobReservation.job_id).where(JobReservation.status == "preempted")
            )
            views = []
            for job, is_waiting in s.execute(
                select(Job, waiting).where(or_(waiting, preempted))
            ).all():
                view = self._job_view(s, job, now, lanes)
                if is_waiting or any(_is_taken_back(p) for p in view["parts"]):
                    views.append(view)
        return sorted(filter(held, views), key=_job_urgency)

    def control_tower(self) -> dict[str, Any]:
        """Every open job with its risk, and every alert not yet resolved, the most
        severe and oldest first."""
        jobs = self.list_jobs(open_only=True)
        with self.db.reading() as s:
            rows = s.scalars(
                select(Alert)
                .where(Alert.status.in_(alerts.ACTIVE))
                .order_by(Alert.raised_at, Alert.id)
            ).all()
            active = [alert_resource(a) for a in rows]
        # The most severe first; within a severity, a job's trouble before stock running
        # low, a machine-down job's before an urgent one's, then the oldest first.
        priority = {job["job_id"]: job["priority"] for job in jobs}
        ranks = {"machine_down": 0, "urgent": 1, "routine": 2}
        active.sort(
            key=lambda a: (
                alerts.SEVERITY_ORDER.index(a["severity"]),
                a["job_id"] is None,
                ranks.get(priority.get(a["job_id"]) or "", len(ranks)),
            )
        )
        counts = {risk: 0 for risk in RISK_SEVERITY}
        for job in jobs:
            counts[job["risk"]] += 1
        return {
            "jobs": jobs,
            "alerts": active,
            "jobs_by_risk": counts,
            "alerts_by_severity": {
                level: sum(1 for a in active if a["severity"] == level)
                for level in alerts.SEVERITY_ORDER
            },
        }

    def _job_view(self, s: Session, job: Job, now: datetime, lanes: _Lanes) -> dict[str, Any]:
        reservations = _job_reservations(s, job.job_id)
        replaced = {r.replaces for r in reservations if r.replaces and r.status not in SET_ASIDE}
        taken = _taken_back(reservations)
        snapshots: dict[str, _Snapshot] = {}

        def snapshot(shipment_id: str) -> _Snapshot | None:
            if shipment_id not in snapshots:
                shipment = s.get(TrackedShipment, shipment_id)
                if shipment is None:
                    return None
                snapshots[shipment_id] = self._snapshot(s, shipment, now, lanes)
            return snapshots[shipment_id]

        parts: list[dict[str, Any]] = []
        counted: list[str] = []
        for r in reservations:
            shipment_id = _shipment_of(s, r.id)
            snap = snapshot(shipment_id) if shipment_id else None
            part = _reservation_part(
                r,
                snap,
                lambda r=r, snap=snap: self._unshipped_estimate(
                    s,
                    r,
                    now,
                    lanes,
                    cancelled=snap.shipment
                    if snap is not None and snap.shipment.status == "cancelled"
                    else None,
                ),
                taken=r.id in taken,
                needed_by=job.required_by or r.required_by,
            )
            parts.append(part)
            if (r.status not in SET_ASIDE or r.id in taken) and r.id not in replaced:
                counted.append(part["risk"])
        known = {r.id for r in reservations}
        loose = s.execute(
            select(ShipmentLine, TrackedShipment.id)
            .join(TrackedShipment, TrackedShipment.id == ShipmentLine.shipment_id)
            .where(TrackedShipment.job_id == job.job_id)
            .order_by(TrackedShipment.first_seen_at, ShipmentLine.id)
        ).all()
        for line, shipment_id in loose:
            if line.reservation_id in known:
                continue
            snap = snapshot(shipment_id)
            assert snap is not None
            part = _shipment_part(line.part_number, line.quantity, line.reservation_id, snap)
            parts.append(part)
            if snap.shipment.status != "cancelled":
                counted.append(part["risk"])
        risk = max(counted, key=RISK_SEVERITY.__getitem__) if counted else "on_track"
        return {
            "job_id": job.job_id,
            "owner": job.owner,
            "site": {"name": job.site_name, "region": job.site_region},
            "required_by": job.required_by,
            "priority": job.priority,
            "risk": risk,
            "parts": parts,
        }


# ======================================================================================
# Resources: what the API shows and the events carry
# ======================================================================================
def event_resource(e: TrackingEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "shipment_id": e.shipment_id,
        "kind": e.kind,
        "occurred_at": e.occurred_at,
        "checkpoint": e.checkpoint,
        "location": e.location,
        "note": e.note,
        "event_id": e.event_id,
        "carrier": e.carrier,
        "tracking_number": e.tracking_number,
        "source": e.source,
        "recorded_at": e.recorded_at,
    }


def alert_resource(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind,
        "status": a.status,
        "severity": alerts.severity(a.kind),
        "subject": a.subject,
        "shipment_id": a.shipment_id,
        "job_id": a.job_id,
        "owner": a.owner,
        "message": a.message,
        "raised_at": a.raised_at,
        "resolved_at": a.resolved_at,
        "acknowledged_at": a.acknowledged_at,
        "acknowledged_by": a.acknowledged_by,
        "note": a.note,
        "updated_at": a.updated_at,
    }


def _checkpoint_resources(
    checkpoints: Sequence[eta.Checkpoint],
    now: datetime,
    *,
    ended: bool,
    arrived: bool,
    ahead: eta.Checkpoint | None,
) -> list[dict]:
    """``arrived``: delivered, so it went by every checkpoint it was not scanned at."""
    passed = [i for i, c in enumerate(checkpoints) if c.passed_at is not None]
    last_passed = len(checkpoints) if arrived else (passed[-1] if passed else -1)
    return [
        _checkpoint_resource(
            c,
            now,
            ended=ended,
            missed=i < last_passed,
            ahead=ahead is not None and c.name == ahead.name,
        )
        for i, c in enumerate(checkpoints)
    ]


def _checkpoint_resource(
    c: eta.Checkpoint,
    now: datetime,
    *,
    ended: bool = False,
    missed: bool = False,
    ahead: bool = False,
) -> dict:
    """``ended``: the journey is over (delivered, lost, cancelled), so a checkpoint it
    never passed is no longer overdue: nothing is coming to pass it. ``missed``: a
    later checkpoint was passed, so the shipment went by this one unscanned.
    ``ahead``: the first checkpoint ahead of the shipment, the one scanned next."""
    missed = missed and c.passed_at is None
    return {
        "name": c.name,
        "due_at": c.due_at,
        "passed_at": c.passed_at,
        "overdue": not ended and not missed and c.passed_at is None and c.due_at < now,
        "missed": missed,
        "ahead": ahead,
    }


def _last_event_resource(e: TrackingEvent | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "kind": e.kind,
        "occurred_at": e.occurred_at,
        "checkpoint": e.checkpoint,
        "location": e.location,
        "note": e.note,
    }


def eta_resource(snap: _Snapshot) -> dict[str, Any]:
    estimate = snap.estimate
    ended = snap.shipment.status in JOURNEY_ENDED
    return {
        "shipment_id": snap.shipment.id,
        "status": snap.shipment.status,
        "eta": estimate.eta,
        "eta_earliest": estimate.earliest,
        "eta_latest": estimate.latest,
        "basis": estimate.basis,
        "reason": estimate.reason,
        "required_by": snap.required_by,
        "risk": snap.risk,
        "next_checkpoint": (
            _checkpoint_resource(
                estimate.next_checkpoint,
                snap.now,
                missed=estimate.next_checkpoint is not estimate.checkpoint_ahead,
                ahead=estimate.next_checkpoint is estimate.checkpoint_ahead,
            )
            if estimate.next_checkpoint
            else None
        ),
        "mode": snap.shipment.mode,
        "carrier": snap.shipment.carrier,
        "tracking_number": snap.shipment.tracking_number,
        "dispatched_at": snap.shipment.dispatched_at,
        "delivered_at": snap.shipment.delivered_at,
        "promised_delivery_at": snap.shipment.promised_delivery_at,
        "checkpoints": _checkpoint_resources(
            snap.checkpoints,
            snap.now,
            ended=ended,
            arrived=snap.shipment.status == "delivered",
            ahead=estimate.checkpoint_ahead,
        ),
        "last_event": _last_event_resource(snap.last_event),
    }


def _reservation_part(
    r: JobReservation,
    snap: _Snapshot | None,
    unshipped: Callable[[], eta.Estimate],
    *,
    taken: bool = False,
    needed_by: datetime | None = None,
) -> dict[str, Any]:
    """``taken``: preempted, and nothing reserved since replaces it (``_taken_back``);
    ``needed_by``: when the reservation's job needs it."""
    part: dict[str, Any] = {
        "part_number": r.part_number,
        "quantity": r.quantity,
        "reservation_id": r.id,
        "reservation_status": r.status,
        "warehouse": r.warehouse,
        "replaces": r.replaces,
    }
    # A reservation still held whose shipment was cancelled is waiting for another:
    # judged as not shipped yet, not as the cancelled shipment's "nothing to say".
    cancelled = snap is not None and snap.shipment.status == "cancelled"
    # A reservation set aside is no longer on the shipment that was to carry it, even
    # while shipments has yet to say so.
    if (
        snap is not None
        and not (cancelled and r.status == "confirmed")
        and r.status not in SET_ASIDE
    ):
        fields = _shipment_fields(snap, r.part_number)
        if snap.situation.job_id != r.job_id and needed_by is not None:
            # A shipment carrying several jobs' parts is judged, for this job, against
            # this job's time.
            fields["risk"] = eta.risk(
                snap.shipment.status, snap.estimate, needed_by, snap.shipment.delivered_at
            )
        return {**part, **fields}
    if r.status == "confirmed":
        estimate = unshipped()
        judged = eta.risk("planned", estimate, r.required_by, None)
        waiting = (
            "Its shipment was cancelled and no other carries it yet"
            if cancelled
            else "No shipment planned yet"
        )
        reason = estimate.reason.replace("Not dispatched yet", waiting, 1)
        fields = _no_shipment(estimate, judged, reason)
        if snap is not None:
            fields.update(shipment_id=snap.shipment.id, shipment_status="cancelled")
        return {**part, **fields}
    risk, reason = {
        "fulfilled": ("delivered", "Delivered."),
        "lost": ("lost", "Lost on the way."),
        "released": ("on_track", "Released: no longer on its way to this job."),
        "preempted": (
            "on_track",
            "Taken for a machine-down job elsewhere; a newer reservation replaces it.",
        ),
    }.get(r.status, ("on_track", "Left the warehouse; its shipment is not known yet."))
    if taken:
        risk, reason = (
            "at_risk",
            "Taken for a machine-down job elsewhere and nothing replaces it yet: reserve another.",
        )
    return {**part, **_no_shipment(None, risk, reason)}


def _shipment_part(
    part_number: str, quantity: int, reservation_id: str | None, snap: _Snapshot
) -> dict[str, Any]:
    return {
        "part_number": part_number,
        "quantity": quantity,
        "reservation_id": reservation_id,
        "reservation_status": None,
        "warehouse": snap.shipment.origin,
        "replaces": None,
        **_shipment_fields(snap, part_number),
    }


def _shipment_fields(snap: _Snapshot, part_number: str) -> dict[str, Any]:
    resource = eta_resource(snap)
    reason = resource["reason"]
    if snap.shipment.status == "lost":
        # Where its replacement comes from, and when: what the engineer needs next,
        # in the one sentence the reason is.
        rescue = alerts.replacement_clause(
            snap.situation.replacements, part_number, snap.required_by
        )
        reason = f"{reason.removesuffix('.')}; {rescue}." if rescue else reason
    elif trouble := alerts.trouble_words(snap.situation, snap.now):
        reason = f"{reason.removesuffix('.')}{trouble}."
    return {
        "shipment_id": snap.shipment.id,
        "shipment_status": snap.shipment.status,
        "eta": resource["eta"],
        "eta_earliest": resource["eta_earliest"],
        "eta_latest": resource["eta_latest"],
        "basis": resource["basis"],
        "risk": snap.risk,
        "reason": reason,
        "next_checkpoint": resource["next_checkpoint"],
        "checkpoints": resource["checkpoints"],
        "last_event": resource["last_event"],
    }


def _no_shipment(estimate: eta.Estimate | None, risk: str, reason: str) -> dict[str, Any]:
    return {
        "shipment_id": None,
        "shipment_status": None,
        "eta": estimate.eta if estimate else None,
        "eta_earliest": estimate.earliest if estimate else None,
        "eta_latest": estimate.latest if estimate else None,
        "basis": estimate.basis if estimate else None,
        "risk": risk,
        "reason": reason,
        "next_checkpoint": None,
        "checkpoints": [],
        "last_event": None,
    }


def _is_taken_back(part: Mapping[str, Any]) -> bool:
    return part["reservation_status"] == "preempted" and part["risk"] != "on_track"


def _job_urgency(view: Mapping[str, Any]) -> tuple[int, str]:
    required_by = view["required_by"]
    return (-RISK_SEVERITY[view["risk"]], required_by.isoformat() if required_by else "~")


# ======================================================================================
# Statements and small rules
# ======================================================================================
def _shipment_for_update(s: Session, shipment_id: str, lock: bool) -> TrackedShipment | None:
    query = select(TrackedShipment).where(TrackedShipment.id == shipment_id)
    if lock:
        query = query.with_for_update()
    return s.scalar(query)


def _shipment_id_query(shipment_id: str) -> Any:
    return select(TrackedShipment.id).where(TrackedShipment.id == shipment_id)


def _shipment_named(s: Session, data: Mapping[str, Any]) -> str | None:
    """The id of the shipment an event names, by id or by carrier and tracking number."""
    if data.get("shipment_id"):
        return s.scalar(_shipment_id_query(data["shipment_id"]))
    return _carried(s, data["carrier"], data["tracking_number"])


def _same_carriage(shipment: TrackedShipment, data: Mapping[str, Any]) -> None:
    """An event naming a shipment by id may repeat its carrier and tracking number, but
    not name another's: a scan of one parcel must not be stored against another. Until
    shipments has told of the dispatch, the carrier is only the planned one (the
    dispatch may name another): nothing to contradict yet."""
    if shipment.dispatch_heard_at is None:
        return
    errors = {
        name: [f"shipment {shipment.id} has {name} {known}, not {data[name]}"]
        for name, known in (
            ("carrier", shipment.carrier),
            ("tracking_number", shipment.tracking_number),
        )
        if data.get(name) and known is not None and data[name].lower() != known.lower()
    }
    if errors:
        raise InvalidInput(
            f"the carrier or tracking number given is not that of shipment {shipment.id}",
            errors=errors,
        )


def _sender_event(s: Session, shipment_id: str, sender_id: str) -> TrackingEvent | None:
    return s.scalar(
        select(TrackingEvent).where(
            TrackingEvent.shipment_id == shipment_id, TrackingEvent.event_id == sender_id
        )
    )


def _merged_status(before: str | None, incoming: str, event_type: str) -> str:
    """Shipments' status, except that what tracking has seen already is not undone by
    an event shipments published before it heard of it: a delivered shipment stays
    delivered while shipments still says it moves, and a lost one moves again only
    when shipments says it resumed. An end shipments decided (lost, cancelled) is
    final: it heard of the same scans and judged them by its state machine."""
    if before == "delivered" and incoming in ("planned", *alerts.MOVING):
        return before
    if (
        before == "lost"
        and incoming in alerts.MOVING
        and event_type != "shipments.shipment.resumed"
    ):
        return before
    return incoming


def _carried(s: Session, carrier: str, number: str) -> str | None:
    """The shipment a carrier's tracking number names: the one on its way, else the
    latest dispatched. Carriers' systems do not always write their name or a tracking
    number in the case staff did at dispatch: the exact spelling first, then the number
    as written, in capitals or in small letters, with the name in any case."""

    def named(*conditions: Any) -> str | None:
        return s.scalars(
            select(TrackedShipment.id)
            .where(*conditions)
            .order_by(
                TrackedShipment.status.in_(SCANNED).desc(),
                TrackedShipment.dispatched_at.desc().nulls_last(),
                TrackedShipment.first_seen_at.desc(),
            )
            .limit(1)
        ).first()

    return named(
        TrackedShipment.tracking_number == number, TrackedShipment.carrier == carrier
    ) or named(
        TrackedShipment.tracking_number.in_({number, number.upper(), number.lower()}),
        func.lower(TrackedShipment.carrier) == carrier.lower(),
    )


def _touch_job(
    s: Session,
    job_id: str,
    now: datetime,
    *,
    owner: str | None,
    site_name: str | None,
    site_region: str | None,
    required_by: datetime | None,
    priority: str | None,
    authoritative: bool,
) -> tuple[Job, tuple[str | None, datetime | None] | None]:
    """Reservations say what a job is; a shipment only fills in what is not known.
    Returns the job and, if it was known before, its owner and required-by then."""
    job = s.get(Job, job_id)
    before = None if job is None else (job.owner, job.required_by)
    if job is None:
        job = Job(job_id=job_id, first_seen_at=now)
        s.add(job)
    for name, value in (
        ("owner", owner),
        ("site_name", site_name),
        ("site_region", site_region),
        ("required_by", required_by),
        ("priority", priority),
    ):
        if value is not None and (authoritative or getattr(job, name) is None):
            setattr(job, name, value)
    job.updated_at = now
    return job, before


def _kept(problem: alerts.Problem) -> str:
    """A problem's fingerprint as an alert keeps it: a digest, since what it is made of
    (a carrier's note, the stock elsewhere) has no length an alert could hold."""
    return hashlib.sha256(problem.fingerprint.encode()).hexdigest()


TROUBLE_KINDS = ("exception", "stalled")


def _troubled(alerts_by_key: Mapping[tuple[str, str], Any]) -> bool:
    return any(kind in TROUBLE_KINDS for _subject, kind in alerts_by_key)


def _elsewhere(s: Session, shipment_id: str) -> list[alerts.Elsewhere]:
    """What inventory answered of where else the shipment's parts could come from."""
    answered = s.scalars(
        select(Sourcing)
        .where(Sourcing.shipment_id == shipment_id, Sourcing.status == "answered")
        .order_by(Sourcing.part_number)
    )
    return [
        alerts.Elsewhere(
            sourcing.part_number,
            sourcing.quantity,
            [
                (a["warehouse"], a["available"], datetime.fromisoformat(a["estimated_arrival"]))
                for a in json.loads(sourcing.alternatives or "[]")
            ],
        )
        for sourcing in answered
    ]


def _needed_by(s: Session, reservation: JobReservation) -> datetime:
    """When a reservation's part is needed: its job's time, else its own."""
    job = s.get(Job, reservation.job_id)
    return (job.required_by if job else None) or reservation.required_by


def _job_reservations(s: Session, job_id: str) -> list[JobReservation]:
    return list(
        s.scalars(
            select(JobReservation)
            .where(JobReservation.job_id == job_id)
            .order_by(JobReservation.first_seen_at, JobReservation.id)
        )
    )


def _taken_back(reservations: Sequence[JobReservation]) -> set[str]:
    """The job's preempted reservations it still needs: taken for a machine-down job
    elsewhere, and no reservation of the same part for the job, made after it (or
    naming it as the one it replaces) and not set aside itself, takes its place."""
    return {
        r.id
        for r in reservations
        if r.status == "preempted"
        and not any(
            other.part_number == r.part_number
            and other.status not in SET_ASIDE
            and (other.replaces == r.id or other.first_seen_at > r.first_seen_at)
            for other in reservations
        )
    }


def _reservations(s: Session, ids: Sequence[str]) -> list[JobReservation]:
    if not ids:
        return []
    return list(s.scalars(select(JobReservation).where(JobReservation.id.in_(ids))))


def _still_wanted(s: Session, rescue: Rescue) -> bool:
    """A rescue still waits for a replacement: none confirmed, or the one confirmed
    was released or taken for another job since."""
    if rescue.status != "confirmed" or rescue.replacement_id is None:
        return True
    replacement = s.get(JobReservation, rescue.replacement_id)
    return replacement is not None and replacement.status in SET_ASIDE


def _shipment_of(s: Session, reservation_id: str) -> str | None:
    """The shipment carrying a reservation: the latest one not cancelled."""
    return s.scalar(
        select(TrackedShipment.id)
        .join(ShipmentLine, ShipmentLine.shipment_id == TrackedShipment.id)
        .where(ShipmentLine.reservation_id == reservation_id)
        .order_by(
            (TrackedShipment.status == "cancelled").asc(), TrackedShipment.first_seen_at.desc()
        )
        .limit(1)
    )


def _shipments_to_judge_again(s: Session, job_id: str) -> list[str]:
    """A job's shipments still on their way, and those whose alerts are still open
    (a lost one waiting for its replacement, one delivered late)."""
    moving = select(TrackedShipment.id).where(
        TrackedShipment.job_id == job_id,
        TrackedShipment.status.in_(("planned", *alerts.MOVING)),
    )
    alerted = select(Alert.shipment_id).where(
        Alert.job_id == job_id, Alert.status != "resolved", Alert.shipment_id.is_not(None)
    )
    return list(dict.fromkeys(s.scalars(moving.union(alerted))))


def _shipments_carrying(s: Session, reservation_id: str) -> list[str]:
    return list(
        s.scalars(
            select(ShipmentLine.shipment_id)
            .where(ShipmentLine.reservation_id == reservation_id)
            .distinct()
        )
    )


def _needs_of_reservation(r: JobReservation, job: Job | None) -> dict[str, Any]:
    """What a replacement of ``r`` must be: the POST /reservations body, no warehouse;
    for whoever holds the job now, by its time now (it may have been handed over or
    moved since ``r`` was made)."""
    return {
        "job_id": r.job_id,
        "part_number": r.part_number,
        "quantity": r.quantity,
        "required_by": (job.required_by if job else None) or r.required_by,
        "priority": r.priority,
        "owner": (job.owner if job else None) or r.owner,
        "site": {"name": r.site_name, "region": r.site_region},
    }


def _needs_of_line(
    s: Session, shipment: TrackedShipment, line: ShipmentLine
) -> dict[str, Any] | None:
    reservation = s.get(JobReservation, line.reservation_id) if line.reservation_id else None
    job = s.get(Job, shipment.job_id) if shipment.job_id else None
    if reservation is not None:
        return _needs_of_reservation(reservation, s.get(Job, reservation.job_id))
    site_name = shipment.destination_site or (job.site_name if job else None)
    region = shipment.destination_region or (job.site_region if job else None)
    owner = (job.owner if job else None) or shipment.owner
    required_by = shipment.required_by or (job.required_by if job else None)
    priority = shipment.priority or (job.priority if job else None)
    if not (shipment.job_id and site_name and region and owner and required_by and priority):
        return None  # a transfer between warehouses, or a job too little is known of
    return {
        "job_id": shipment.job_id,
        "part_number": line.part_number,
        "quantity": line.quantity,
        "required_by": required_by,
        "priority": priority,
        "owner": owner,
        "site": {"name": site_name, "region": region},
    }


def _first_movement_at(s: Session, shipment_id: str) -> datetime | None:
    return s.scalar(
        select(func.min(TrackingEvent.occurred_at)).where(
            TrackingEvent.shipment_id == shipment_id, TrackingEvent.kind.in_(MOVEMENT_KINDS)
        )
    )


def _lane_key(s: Session, shipment: TrackedShipment) -> LaneKey:
    origin = shipment.origin_region or _warehouse_region(s, shipment.origin) or shipment.origin
    destination = (
        shipment.destination_region
        or (
            _warehouse_region(s, shipment.destination_warehouse)
            if shipment.destination_warehouse
            else None
        )
        or shipment.destination_site
        or shipment.destination_warehouse
        or ""
    )
    # Lanes are kept by name_key: regions and carriers are typed in any case.
    return name_key(origin), name_key(destination), shipment.mode, name_key(shipment.carrier or "")


def _same_region(s: Session, shipment: TrackedShipment) -> bool | None:
    origin = shipment.origin_region or _warehouse_region(s, shipment.origin)
    destination = shipment.destination_region or (
        _warehouse_region(s, shipment.destination_warehouse)
        if shipment.destination_warehouse
        else None
    )
    if origin is None or destination is None:
        return None
    return name_key(origin) == name_key(destination)


def _warehouse_region(s: Session, code: str) -> str | None:
    warehouse = s.get(KnownWarehouse, code)
    return warehouse.region if warehouse else None


def _lane_stats(s: Session, *conditions: Any) -> eta.LaneStats:
    rows = s.execute(
        select(
            LaneTransit.hours,
            LaneTransit.promised_hours,
            LaneTransit.midway_delay_hours,
            LaneTransit.final_delay_hours,
            LaneTransit.longest_silence_hours,
        )
        .where(*conditions)
        .order_by(LaneTransit.delivered_at.desc())
        .limit(LANE_WINDOW)
    ).all()
    return eta.lane_stats([eta.Transit(*row) for row in rows])


def _active_alert(s: Session, subject: str, kind: str) -> Alert | None:
    return s.scalar(
        select(Alert).where(
            Alert.subject == subject, Alert.kind == kind, Alert.status.in_(alerts.ACTIVE)
        )
    )


def _event_time(envelope: Mapping[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(envelope["time"])
    except (KeyError, TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
