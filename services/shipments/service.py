"""Shipments' use cases: plan, dispatch, deliver, cancel, and follow what inventory
and tracking announce. One transaction per action; each status change and the
event announcing it commit together."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.shipments import states
from services.shipments.models import (
    OPEN_STATUSES,
    Checkpoint,
    EarlyCheckpointScan,
    EarlyReport,
    KnownPart,
    KnownReservation,
    KnownWarehouse,
    Shipment,
    ShipmentEvent,
    ShipmentLine,
)
from shared.bus.context import current_correlation_id, once_heard_of
from shared.bus.store import Transaction
from shared.clock import Clock, SystemClock
from shared.contracts import name_key
from shared.db import Database
from shared.errors import Conflict, InvalidInput, NotFound

# A dispatch or delivery time "now" may come from a clock a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=2)
DEFAULT_MODE = "carrier"
# A warehouse or reservation inventory announced a moment ago may not have reached
# shipments yet: a shipment naming one waits this long for it before 404.
NEWS_GRACE_SECONDS = 2.0
# Who wrote what tracking's scans put in a shipment's history.
TRACKING = "tracking"
# A job's priorities, the most urgent first.
PRIORITIES = ("machine_down", "urgent", "routine")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int


class Shipments:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    # ==================================================================================
    # Shipments created by hand
    # ==================================================================================
    def create_shipment(
        self, data: Mapping[str, Any], *, actor: str | None = None, wait_for_news: bool = False
    ) -> dict[str, Any]:
        """A shipment planned by hand, between warehouses and for reservations shipments
        has heard of. ``wait_for_news`` (people and API clients): one inventory has just
        announced may still be on its way over the bus, so it is waited for a moment
        before NotFound."""
        return once_heard_of(
            lambda: self._create_shipment(data, actor),
            lambda: self._knows_all(data),
            NEWS_GRACE_SECONDS if wait_for_news else 0.0,
        )

    def _knows_all(self, data: Mapping[str, Any]) -> bool:
        codes = {data["origin"], data["destination"].get("warehouse")} - {None}
        parts = {line["part_number"] for line in data["lines"] if not line.get("reservation_id")}
        reservations = {line.get("reservation_id") for line in data["lines"]} - {None}
        with self.db.reading() as s:
            known_codes = s.scalar(select(func.count()).where(KnownWarehouse.code.in_(codes)))
            known_parts = s.scalar(select(func.count()).where(KnownPart.part_number.in_(parts)))
            known_reservations = s.scalar(
                select(func.count()).where(KnownReservation.id.in_(reservations))
            )
        return (
            known_codes == len(codes)
            and known_parts == len(parts)
            and known_reservations == len(reservations)
        )

    def _create_shipment(self, data: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        now = self.clock.now()
        _check_units_named_once(data["lines"])
        with self.db.transaction() as tx:
            s = tx.session
            origin = _known_warehouse(s, data["origin"])
            site, warehouse_code, region = _destination(s, data["destination"], data["origin"])
            lines = [
                self._manual_line(s, data["origin"], (site, region), line) for line in data["lines"]
            ]
            reservation_ids = [line.reservation_id for line in lines if line.reservation_id]
            _check_jobs_carried(s, reservation_ids, data.get("job_id"))
            job = _job_of(s, reservation_ids)
            shipment = Shipment(
                id=str(uuid.uuid4()),
                status=states.PLANNED,
                origin=data["origin"],
                origin_region=origin.region,
                destination_site=site,
                destination_warehouse=warehouse_code,
                destination_region=region,
                mode=data["mode"],
                job_id=data.get("job_id") or job.job_id,
                priority=job.priority,
                owner=job.owner,
                required_by=data.get("required_by") or job.required_by,
                correlation_id=current_correlation_id(),
                version=1,
                created_at=now,
                updated_at=now,
            )
            s.add(shipment)
            s.flush()
            for line in lines:
                line.shipment_id = shipment.id
                s.add(line)
            _history(s, shipment, now, "created by hand", actor)
            s.flush()
            return self._announce(tx, shipment, "planned")

    def _manual_line(
        self,
        s: Session,
        origin: str,
        site: tuple[str | None, str | None],
        line: Mapping[str, Any],
    ) -> ShipmentLine:
        """One line of a shipment planned by hand; ``site``: its destination site and
        region (no site: a transfer to a warehouse)."""
        reservation_id = line.get("reservation_id")
        serials = list(line.get("serials") or [])
        if serials and len(serials) != line["quantity"]:
            raise InvalidInput(
                "give one serial per unit, or none",
                errors={
                    "lines": [
                        f"{line['part_number']}: {len(serials)} serials for "
                        f"{line['quantity']} units"
                    ]
                },
            )
        if reservation_id is None:
            # A line of its own names a part inventory has announced (a reservation's
            # line is checked against the reservation).
            part = s.get(KnownPart, line["part_number"])
            if part is None:
                raise NotFound(
                    f"no part {line['part_number']}",
                    errors={"lines": [f"{line['part_number']}: unknown part"]},
                )
            if serials and part.serialized is False:
                raise InvalidInput(
                    f"{part.part_number} is not serialized",
                    errors={"lines": [f"{part.part_number}: no serials for a part without them"]},
                )
            return ShipmentLine(
                part_number=line["part_number"],
                quantity=line["quantity"],
                serials=",".join(serials),
            )
        known = s.get(KnownReservation, reservation_id)
        if known is None:
            raise NotFound(f"no reservation {reservation_id}")
        if known.status != "confirmed":
            raise Conflict(f"reservation {reservation_id} is {known.status}")
        if (
            known.warehouse != origin
            or known.part_number != line["part_number"]
            or known.quantity != line["quantity"]
        ):
            # A line ships what its reservation holds, as given: a different part or
            # quantity is a mistake to correct, not one to correct silently.
            raise InvalidInput(
                f"reservation {reservation_id} is for {known.quantity} {known.part_number} "
                f"at {known.warehouse}",
                errors={
                    "lines": [
                        f"{line['quantity']} {line['part_number']} from {origin} does not "
                        f"match reservation {reservation_id} ({known.quantity} "
                        f"{known.part_number} at {known.warehouse})"
                    ]
                },
            )
        _check_reservation_goes_to_its_site(known, site)
        held = [x for x in (known.serials or "").split(",") if x]
        if serials and known.serials is not None and sorted(serials) != sorted(held):
            raise InvalidInput(
                f"reservation {reservation_id} holds {', '.join(held) or 'no named units'}",
                errors={
                    "lines": [
                        f"serials {', '.join(serials)} are not the units reservation "
                        f"{reservation_id} holds ({', '.join(held) or 'none'})"
                    ]
                },
            )
        carrying = s.scalar(
            select(ShipmentLine.shipment_id)
            .join(Shipment, Shipment.id == ShipmentLine.shipment_id)
            .where(
                ShipmentLine.reservation_id == reservation_id,
                Shipment.status.in_((states.PLANNED, *OPEN_STATUSES, states.DELIVERED)),
            )
        )
        if carrying:
            raise Conflict(f"reservation {reservation_id} is on shipment {carrying} already")
        return ShipmentLine(
            part_number=known.part_number,
            quantity=known.quantity,
            reservation_id=reservation_id,
            serials=",".join(serials) if serials else ",".join(held),
        )

    # ==================================================================================
    # Planning from reservations
    # ==================================================================================
    def plan_for_reservation(self, reservation: Mapping[str, Any], correlation_id: str) -> None:
        """A confirmed reservation: put it on its job's planned shipment from its
        warehouse (one per job and origin), creating that shipment if needed."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            if not _note_reservation(tx, reservation):
                return
            if reservation["status"] != "confirmed":
                return
            on_a_shipment = s.scalar(
                select(ShipmentLine.id).where(ShipmentLine.reservation_id == reservation["id"])
            )
            if on_a_shipment is not None:
                return
            line = {
                "part_number": reservation["part_number"],
                "quantity": reservation["quantity"],
                "reservation_id": reservation["id"],
                "serials": ",".join(reservation.get("serials") or []),
            }
            under_way = self._open_shipments_of_job(s, reservation["job_id"])
            shipment = next((x for x in under_way if _takes(x, reservation)), None)
            # A new reservation says who holds the job now: a job handed over (a
            # dispatcher's to its field engineer) names the new owner on every shipment
            # still on its way, as tracking's alerts and job view do.
            handed_over = [x for x in under_way if x.owner != reservation["owner"]]
            for other in handed_over:
                other.owner = reservation["owner"]
                other.version += 1
                other.updated_at = now
            if shipment is None:
                self._plan_new_shipment(tx, reservation, line, correlation_id, now)
            else:
                if shipment not in handed_over:
                    shipment.version += 1
                    shipment.updated_at = now
                    handed_over.append(shipment)
                # A shipment planned by hand may not say when it is needed.
                required_by = reservation["required_by"]
                if shipment.required_by is not None:
                    required_by = min(shipment.required_by, required_by)
                shipment.required_by = required_by
                shipment.priority = shipment.priority or reservation["priority"]
                s.add(ShipmentLine(shipment_id=shipment.id, **line))
            s.flush()
            for changed in handed_over:
                self._announce(tx, changed, "updated")

    def _plan_new_shipment(
        self,
        tx: Transaction,
        reservation: Mapping[str, Any],
        line: dict[str, Any],
        correlation_id: str,
        now: datetime,
    ) -> None:
        """The common case, one reservation making a job's shipment: its rows go in at
        commit and its event is built from them, with nothing read back."""
        route = reservation.get("route")
        origin_region = reservation.get("warehouse_region")
        if origin_region is None:
            origin = tx.session.get(KnownWarehouse, reservation["warehouse"])
            origin_region = origin.region if origin else None
        shipment = Shipment(
            id=str(uuid.uuid4()),
            status=states.PLANNED,
            origin=reservation["warehouse"],
            origin_region=origin_region,
            destination_site=reservation["site"]["name"],
            destination_warehouse=None,
            destination_region=reservation["site"]["region"],
            # The way inventory's choice of warehouse expected the part to travel.
            mode=route["mode"] if route else DEFAULT_MODE,
            carrier=route.get("carrier") if route else None,
            tracking_number=None,
            job_id=reservation["job_id"],
            priority=reservation["priority"],
            owner=reservation["owner"],
            # As read back from the database would give it: in UTC.
            required_by=reservation["required_by"].astimezone(UTC),
            promised_delivery_at=None,
            dispatched_at=None,
            delivered_at=None,
            received_by=None,
            correlation_id=correlation_id,
            version=1,
            created_at=now,
            updated_at=now,
        )
        history = {
            "status": states.PLANNED,
            "at": now,
            "note": f"planned for reservation {reservation['id']}",
            "actor": None,
        }
        tx.insert_at_commit(Shipment.__table__, [_columns(shipment)])
        tx.insert_at_commit(ShipmentLine.__table__, [{"shipment_id": shipment.id, **line}])
        tx.insert_at_commit(ShipmentEvent.__table__, [{"shipment_id": shipment.id, **history}])
        resource = _shipment_resource(shipment, [_line_resource(line)], [], [history])
        tx.publish(
            "shipments.shipment.planned",
            subject=shipment.id,
            data=resource,
            correlation_id=correlation_id,
        )

    def _open_shipments_of_job(self, s: Session, job_id: str) -> list[Shipment]:
        """The job's shipments not at their journey's end yet, oldest first, locked (in
        that order, by every caller): the planned one a reservation joins, and those a
        handover names the new owner on."""
        query = (
            select(Shipment)
            .where(
                Shipment.job_id == job_id,
                Shipment.status.in_((states.PLANNED, *OPEN_STATUSES)),
            )
            .order_by(Shipment.created_at, Shipment.id)
        )
        if self.db.is_postgres:
            query = query.with_for_update()
        return list(s.scalars(query))

    def unplan_reservation(self, reservation: Mapping[str, Any]) -> None:
        """A released or preempted reservation leaves its planned shipment; a shipment
        left with no lines is cancelled."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            if not _note_reservation(tx, reservation):
                return
            line = s.scalar(
                select(ShipmentLine)
                .join(Shipment, Shipment.id == ShipmentLine.shipment_id)
                .where(
                    ShipmentLine.reservation_id == reservation["id"],
                    Shipment.status == states.PLANNED,
                )
            )
            if line is None:
                return
            shipment = _locked(s, line.shipment_id, self.db.is_postgres)
            s.delete(line)
            s.flush()
            remaining = s.scalar(
                select(func.count()).where(ShipmentLine.shipment_id == shipment.id)
            )
            shipment.version += 1
            shipment.updated_at = now
            reason = f"reservation {reservation['id']} {reservation['status']}"
            if remaining == 0:
                shipment.status = states.CANCELLED
                _history(s, shipment, now, f"{reason}; nothing left to ship", None)
                s.flush()
                self._announce(tx, shipment, "cancelled")
            else:
                s.flush()
                self._announce(tx, shipment, "updated")

    def note_reservation(self, reservation: Mapping[str, Any]) -> None:
        """Any other reservation event: remember its latest version and status."""
        with self.db.transaction() as tx:
            _note_reservation(tx, reservation)

    def note_part(self, part: Mapping[str, Any]) -> None:
        with self.db.transaction() as tx:
            known = tx.session.get(KnownPart, part["part_number"])
            if known is None:
                tx.session.add(
                    KnownPart(part_number=part["part_number"], serialized=part["serialized"])
                )
            else:
                known.serialized = part["serialized"]

    def note_warehouse(self, warehouse: Mapping[str, Any]) -> None:
        code, region = warehouse["code"], warehouse["region"]
        with self.db.transaction() as tx:
            s = tx.session
            known = s.get(KnownWarehouse, code)
            if known is None:
                s.add(KnownWarehouse(code=code, name=warehouse["name"], region=region))
            else:
                known.name = warehouse["name"]
                known.region = region
            # Shipments created before this warehouse was known learn its region now.
            s.execute(
                update(Shipment)
                .where(Shipment.origin == code, Shipment.origin_region.is_(None))
                .values(origin_region=region)
            )
            s.execute(
                update(Shipment)
                .where(
                    Shipment.destination_warehouse == code, Shipment.destination_region.is_(None)
                )
                .values(destination_region=region)
            )

    def note_shortfall(self, shortfall: Mapping[str, Any]) -> None:
        """Inventory had less at the origin than a line took: it issued nothing for
        it. The shipment's history says so, for the people who follow it."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _locked_or_none(s, shortfall["shipment_id"], self.db.is_postgres)
            if shipment is None:
                return
            units = shortfall.get("serials") or []
            why = (
                f"units {', '.join(units)} were not available there"
                if units
                else f"it took {shortfall['quantity']} but only {shortfall['available']} "
                "were available there"
            )
            note = (
                f"inventory issued no {shortfall['part_number']} from {shortfall['warehouse']} "
                f"for this shipment: {why}; count what was packed"
            )
            shipment.version += 1
            shipment.updated_at = now
            _history(s, shipment, now, note, "inventory")
            s.flush()
            self._announce(tx, shipment, "updated")

    # ==================================================================================
    # Dispatch, delivery, cancellation
    # ==================================================================================
    def dispatch(
        self, shipment_id: str, data: Mapping[str, Any], *, actor: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        mode = data.get("mode")
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _locked(s, shipment_id, self.db.is_postgres)
            states.next_status("dispatch", shipment.status, shipment.id)
            # A carrier planned with the shipment's mode goes unless another is named.
            planned_carrier = shipment.carrier if mode in (None, shipment.mode) else None
            mode = mode or shipment.mode
            carrier = data.get("carrier") or planned_carrier
            dispatched_at = data.get("dispatched_at") or now
            _check_dispatch(data, mode, carrier, dispatched_at, now)
            tracking_number = data.get("tracking_number")
            if carrier and tracking_number:
                clash = s.scalar(
                    select(Shipment.id).where(
                        Shipment.carrier == carrier,
                        Shipment.tracking_number == tracking_number,
                        Shipment.status.in_(OPEN_STATUSES),
                    )
                )
                if clash:
                    raise Conflict(
                        f"{carrier} {tracking_number} is already on open shipment {clash}"
                    )
            shipment.mode = mode
            shipment.carrier = carrier
            shipment.tracking_number = tracking_number
            shipment.promised_delivery_at = data.get("promised_delivery_at")
            shipment.dispatched_at = dispatched_at
            shipment.status = states.IN_TRANSIT
            shipment.version += 1
            shipment.updated_at = now
            s.execute(delete(Checkpoint).where(Checkpoint.shipment_id == shipment.id))
            early: dict[str, datetime] = {}
            for name, at in s.execute(
                select(EarlyCheckpointScan.name, EarlyCheckpointScan.at).where(
                    EarlyCheckpointScan.shipment_id == shipment.id
                )
            ):
                key = name_key(name)
                early[key] = min(at, early.get(key, at))
            for seq, checkpoint in enumerate(data.get("checkpoints") or [], start=1):
                s.add(
                    Checkpoint(
                        shipment_id=shipment.id,
                        seq=seq,
                        name=checkpoint["name"],
                        due_at=checkpoint["due_at"],
                        passed_at=early.get(name_key(checkpoint["name"])),
                    )
                )
            _history(s, shipment, dispatched_at, f"dispatched by {mode.replace('_', '-')}", actor)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(
                    f"{carrier} {tracking_number} is already on an open shipment"
                ) from None
            dispatched = self._announce(tx, shipment, "dispatched")
            report = s.get(EarlyReport, shipment.id)
            if report is None:
                return dispatched
            # The carrier reported trouble before the dispatch was recorded: taken up
            # at once. The answer is the dispatch itself (status in_transit, as the
            # contract has it); what follows it is its own event.
            s.delete(report)
            self._move(s, shipment, report.action, report.at, now, report.note)
            self._announce(tx, shipment, states.ANNOUNCED[report.action])
            return dispatched

    def deliver(
        self, shipment_id: str, data: Mapping[str, Any], *, actor: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _locked(s, shipment_id, self.db.is_postgres)
            states.next_status("deliver", shipment.status, shipment.id)
            delivered_at = data.get("delivered_at") or now
            if delivered_at > now + CLOCK_SKEW:
                raise InvalidInput(
                    "delivered_at is in the future",
                    errors={"delivered_at": ["must not be in the future"]},
                )
            if shipment.dispatched_at and delivered_at < shipment.dispatched_at:
                raise InvalidInput(
                    "delivered_at is before the dispatch",
                    errors={
                        "delivered_at": [
                            "must not be before the dispatch, at "
                            f"{shipment.dispatched_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
                        ]
                    },
                )
            received_by = data.get("received_by")
            shipment.received_by = received_by
            self._deliver(
                s,
                shipment,
                delivered_at,
                now,
                note=f"received by {received_by}" if received_by else None,
                actor=actor,
            )
            return self._announce(tx, shipment, "delivered")

    def _deliver(
        self,
        s: Session,
        shipment: Shipment,
        delivered_at: datetime,
        now: datetime,
        *,
        note: str | None,
        actor: str | None,
    ) -> None:
        shipment.status = states.DELIVERED
        shipment.delivered_at = delivered_at
        shipment.version += 1
        shipment.updated_at = now
        _history(s, shipment, delivered_at, note, actor)
        s.flush()

    def cancel(self, shipment_id: str, reason: str, *, actor: str | None = None) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _locked(s, shipment_id, self.db.is_postgres)
            shipment.status = states.next_status("cancel", shipment.status, shipment.id)
            shipment.version += 1
            shipment.updated_at = now
            _history(s, shipment, now, reason, actor)
            s.flush()
            return self._announce(tx, shipment, "cancelled")

    # ==================================================================================
    # Tracking events
    # ==================================================================================
    def apply_tracking_event(self, event: Mapping[str, Any]) -> None:
        """A tracking event recorded by tracking: a scan (which passes the checkpoint it
        names), an exception, a loss, a delivery. Events may come late, twice or out
        of order: a report older than the latest scan already heard does not move the
        shipment, and one that is delivered, lost or cancelled does not move again.
        Every scan of a shipment not yet at its end goes in its history (by
        ``tracking``): that is how the latest one is known."""
        now = self.clock.now()
        kind = event["kind"]
        at: datetime = event["occurred_at"]
        with self.db.transaction() as tx:
            s = tx.session
            shipment = _locked_or_none(s, event["shipment_id"], self.db.is_postgres)
            if shipment is None:
                return
            if kind in states.PASSING_KINDS and event.get("checkpoint"):
                _pass_checkpoint(s, shipment, event["checkpoint"], at)
            note = _event_note(event)
            if kind == "delivered":
                if shipment.status == states.PLANNED:
                    # The carrier delivered before anyone recorded the dispatch: it left
                    # at its first scan on the way, if one was heard.
                    left = min(at, shipment.first_scan_at or at)
                    shipment.status = states.IN_TRANSIT
                    shipment.dispatched_at = left
                    shipment.version += 1
                    how = "its first scan" if left < at else "a delivery scan"
                    _history(s, shipment, left, f"dispatch inferred from {how}", TRACKING)
                    # Trouble reported before it: the delivery says it is over.
                    s.execute(delete(EarlyReport).where(EarlyReport.shipment_id == shipment.id))
                    self._announce(tx, shipment, "dispatched")
                if states.can("deliver", shipment.status):
                    delivered_at = max(at, shipment.dispatched_at or at)
                    self._deliver(s, shipment, delivered_at, now, note=note, actor=TRACKING)
                    self._announce(tx, shipment, "delivered")
                return
            if shipment.status not in (states.PLANNED, *OPEN_STATUSES):
                return
            latest = shipment.latest_scan_at
            if latest is None or at > latest:
                shipment.latest_scan_at = at
            action = states.action_for_scan(kind)
            # A report counts unless a later scan was heard; a scan ends an exception
            # only when it is newer than the report.
            timely = (
                (latest is None or at > latest)
                if action == "resume"
                else (latest is None or at >= latest)
            )
            if shipment.status == states.PLANNED:
                if kind in states.MOVEMENT_KINDS and (
                    shipment.first_scan_at is None or at < shipment.first_scan_at
                ):
                    shipment.first_scan_at = at
                if action is not None and timely:
                    _hold_early_report(s, shipment.id, action, at, note)
            elif action is not None and states.can(action, shipment.status) and timely:
                self._move(s, shipment, action, at, now, note)
                self._announce(tx, shipment, states.ANNOUNCED[action])
            s.flush()

    def _move(
        self,
        s: Session,
        shipment: Shipment,
        action: str,
        at: datetime,
        now: datetime,
        note: str | None,
    ) -> None:
        shipment.status = states.next_status(action, shipment.status, shipment.id)
        shipment.version += 1
        shipment.updated_at = now
        _history(s, shipment, at, note, TRACKING)
        s.flush()

    # ==================================================================================
    # Reads
    # ==================================================================================
    def get_shipment(self, shipment_id: str) -> dict[str, Any]:
        with self.db.reading() as session:
            resources = shipment_resources(session, [shipment_id])
        if not resources:
            raise NotFound(f"no shipment {shipment_id}")
        return resources[0]

    def list_shipments(
        self,
        *,
        status: str | None = None,
        job_id: str | None = None,
        reservation_id: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> Page:
        query = select(Shipment.id)
        if status:
            query = query.where(Shipment.status == status)
        if job_id:
            query = query.where(Shipment.job_id == job_id)
        if reservation_id:
            query = query.where(
                Shipment.id.in_(
                    select(ShipmentLine.shipment_id).where(
                        ShipmentLine.reservation_id == reservation_id
                    )
                )
            )
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            ids = session.scalars(
                query.order_by(Shipment.created_at, Shipment.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
            return Page(shipment_resources(session, list(ids)), total)

    def list_warehouses(self) -> list[dict[str, Any]]:
        """The warehouses shipments knows of (for forms)."""
        with self.db.reading() as session:
            return [
                {"code": w.code, "name": w.name, "region": w.region}
                for w in session.scalars(select(KnownWarehouse).order_by(KnownWarehouse.code))
            ]

    def _announce(self, tx: Transaction, shipment: Shipment, what: str) -> dict[str, Any]:
        resource = shipment_resources(tx.session, [shipment.id])[0]
        tx.publish(
            f"shipments.shipment.{what}",
            subject=shipment.id,
            data=resource,
            # The request or message that caused this change; the one that planned the
            # shipment only when nothing else did.
            correlation_id=current_correlation_id() or shipment.correlation_id,
        )
        return resource


# ======================================================================================
# Resources
# ======================================================================================
def shipment_resources(s: Session, ids: Sequence[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    shipments = {x.id: x for x in s.scalars(select(Shipment).where(Shipment.id.in_(ids)))}
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in s.scalars(
        select(ShipmentLine).where(ShipmentLine.shipment_id.in_(ids)).order_by(ShipmentLine.id)
    ):
        lines.setdefault(line.shipment_id, []).append(
            _line_resource(
                {
                    "part_number": line.part_number,
                    "quantity": line.quantity,
                    "reservation_id": line.reservation_id,
                    "serials": line.serials,
                }
            )
        )
    checkpoints: dict[str, list[dict[str, Any]]] = {}
    for checkpoint in s.scalars(
        select(Checkpoint).where(Checkpoint.shipment_id.in_(ids)).order_by(Checkpoint.seq)
    ):
        checkpoints.setdefault(checkpoint.shipment_id, []).append(
            {
                "name": checkpoint.name,
                "due_at": checkpoint.due_at,
                "passed_at": checkpoint.passed_at,
            }
        )
    history: dict[str, list[dict[str, Any]]] = {}
    for event in s.scalars(
        select(ShipmentEvent).where(ShipmentEvent.shipment_id.in_(ids)).order_by(ShipmentEvent.id)
    ):
        history.setdefault(event.shipment_id, []).append(
            {"status": event.status, "at": event.at, "note": event.note, "actor": event.actor}
        )
    resources = []
    for shipment_id in ids:
        x = shipments.get(shipment_id)
        if x is not None:
            resources.append(
                _shipment_resource(
                    x, lines.get(x.id, []), checkpoints.get(x.id, []), history.get(x.id, [])
                )
            )
    return resources


def _shipment_resource(
    x: Shipment,
    lines: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    destination: dict[str, Any] = (
        {"warehouse": x.destination_warehouse, "region": x.destination_region}
        if x.destination_warehouse
        else {"site": x.destination_site, "region": x.destination_region}
    )
    return {
        "id": x.id,
        "status": x.status,
        "origin": x.origin,
        "origin_region": x.origin_region,
        "destination": destination,
        "mode": x.mode,
        "carrier": x.carrier,
        "tracking_number": x.tracking_number,
        "lines": lines,
        "job_id": x.job_id,
        "priority": x.priority,
        "owner": x.owner,
        "required_by": x.required_by,
        "promised_delivery_at": x.promised_delivery_at,
        "dispatched_at": x.dispatched_at,
        "delivered_at": x.delivered_at,
        "received_by": x.received_by,
        "checkpoints": checkpoints,
        "history": history,
        "version": x.version,
        "created_at": x.created_at,
        "updated_at": x.updated_at,
    }


def _line_resource(line: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "part_number": line["part_number"],
        "quantity": line["quantity"],
        "reservation_id": line["reservation_id"],
        "serials": [x for x in line["serials"].split(",") if x],
    }


def _columns(shipment: Shipment) -> dict[str, Any]:
    """A shipment not in the session, as the row to insert."""
    return {column.key: getattr(shipment, column.key) for column in Shipment.__table__.columns}


# ======================================================================================
# Rules and statements
# ======================================================================================
def _destination(
    s: Session, destination: Mapping[str, Any], origin: str
) -> tuple[str | None, str | None, str | None]:
    if destination.get("warehouse"):
        code = destination["warehouse"]
        if code == origin:
            raise InvalidInput(
                "a transfer goes to another warehouse",
                errors={"destination": ["the destination is the origin"]},
            )
        region = _known_warehouse(s, code).region
        if destination.get("region") is not None and not _same_text(destination["region"], region):
            # The warehouse's region is its own: one that disagrees is a mistake.
            raise InvalidInput(
                f"warehouse {code} is in {region}",
                errors={"destination": [f"region {destination['region']}: {code} is in {region}"]},
            )
        return None, code, region
    return destination["site"], None, _region_as_known(s, destination["region"])


def _region_as_known(s: Session, region: str) -> str:
    """A site's region as the warehouses there write it (``Sichuan`` for ``sichuan``),
    when one is there: lanes, and so ETAs, are learnt by region."""
    key = name_key(region)
    for known in s.scalars(select(KnownWarehouse.region)):
        if name_key(known) == key:
            return known
    return region


def _check_reservation_goes_to_its_site(
    known: KnownReservation, site: tuple[str | None, str | None]
) -> None:
    """A reservation is delivered to its job's site: a shipment elsewhere (another
    site, or a warehouse) would mark it fulfilled where the job is not."""
    if known.site_region is None:
        return  # noted before sites were kept, and never planned: nothing to hold it to
    if _same_text(site[0], known.site_name) and _same_text(site[1], known.site_region):
        return
    wanted = f"{known.site_name} ({known.site_region})"
    raise InvalidInput(
        f"reservation {known.id} is for job {known.job_id} at {wanted}",
        errors={"destination": [f"a line for reservation {known.id} ships to {wanted}"]},
    )


def _same_text(given: str | None, known: str | None) -> bool:
    """Names typed by people: the same but for case and spacing."""
    if given is None or known is None:
        return given == known
    return name_key(given) == name_key(known)


def _known_warehouse(s: Session, code: str) -> KnownWarehouse:
    warehouse = s.get(KnownWarehouse, code)
    if warehouse is None:
        raise NotFound(f"no warehouse {code}")
    return warehouse


def _check_dispatch(
    data: Mapping[str, Any], mode: str, carrier: str | None, dispatched_at: datetime, now: datetime
) -> None:
    errors: dict[str, list[str]] = {}
    if mode == "carrier" and not carrier:
        errors["carrier"] = ["required when the mode is carrier"]
    if dispatched_at > now + CLOCK_SKEW:
        errors["dispatched_at"] = ["must not be in the future"]
    promised = data.get("promised_delivery_at")
    if promised is not None and promised < dispatched_at:
        errors["promised_delivery_at"] = ["must not be before the dispatch"]
    checkpoints = data.get("checkpoints") or []
    names = [name_key(c["name"]) for c in checkpoints]
    if len(set(names)) != len(names):
        errors.setdefault("checkpoints", []).append(
            "checkpoint names must be unique within a shipment (whatever their case)"
        )
    # The list is the route in order: a due time before the one ahead of it is a slip
    # that would make the next checkpoint and every overdue alert wrong.
    out_of_order = [
        f"{later['name']} is due before {earlier['name']}, which comes before it on the route"
        for earlier, later in pairwise(checkpoints)
        if later["due_at"] < earlier["due_at"]
    ]
    if out_of_order:
        errors.setdefault("checkpoints", []).append(
            "list the checkpoints in route order, each due no earlier than the one before: "
            + "; ".join(out_of_order[:3])
        )
    if errors:
        raise InvalidInput("the dispatch has invalid fields; see errors", errors=errors)


def _note_reservation(tx: Transaction, reservation: Mapping[str, Any]) -> bool:
    """Remember the reservation's latest version; False when this event is stale. The
    row is locked, so two deliveries of one reservation at once apply in turn (a new
    row's primary key does the same for the first two; nothing reads it back, so it
    goes in at commit)."""
    s = tx.session
    lock = s.get_bind().dialect.name == "postgresql"
    known = s.get(KnownReservation, reservation["id"], with_for_update=lock or None)
    if known is not None and known.version >= reservation["version"]:
        return False
    if known is None:
        tx.insert_at_commit(
            KnownReservation.__table__,
            [
                {
                    "id": reservation["id"],
                    "version": reservation["version"],
                    "status": reservation["status"],
                    "job_id": reservation["job_id"],
                    "part_number": reservation["part_number"],
                    "quantity": reservation["quantity"],
                    "warehouse": reservation["warehouse"],
                    "site_name": reservation["site"]["name"],
                    "site_region": reservation["site"]["region"],
                    "serials": ",".join(reservation.get("serials") or []),
                }
            ],
        )
    else:
        known.version = reservation["version"]
        known.status = reservation["status"]
        known.site_name = reservation["site"]["name"]
        known.site_region = reservation["site"]["region"]
        known.serials = ",".join(reservation.get("serials") or [])
    return True


def _takes(shipment: Shipment, reservation: Mapping[str, Any]) -> bool:
    """Whether a reservation joins this shipment: its job's planned shipment from the
    reservation's warehouse to its site (a transfer to a warehouse, or a shipment to
    another site, does not take it)."""
    site = reservation["site"]
    return (
        shipment.status == states.PLANNED
        and shipment.origin == reservation["warehouse"]
        and shipment.destination_warehouse is None
        and shipment.destination_site == site["name"]
        and shipment.destination_region == site["region"]
    )


@dataclass(frozen=True)
class _Job:
    """What a shipment's reservations say of the job it serves."""

    job_id: str | None = None
    priority: str | None = None
    owner: str | None = None
    required_by: datetime | None = None


def _check_units_named_once(lines: Sequence[Mapping[str, Any]]) -> None:
    """A unit is one thing in one place: named twice, on one line or two, it would
    leave its warehouse twice on the books while another unit stayed."""
    named = Counter(serial for line in lines for serial in line.get("serials") or [])
    twice = sorted(serial for serial, count in named.items() if count > 1)
    if twice:
        raise InvalidInput(
            f"serial {', '.join(twice)} is named more than once",
            errors={"lines": [f"serial {serial} is named more than once" for serial in twice]},
        )


def _check_jobs_carried(s: Session, reservation_ids: Sequence[str], job_id: str | None) -> None:
    """A shipment that names its job carries only that job's reservations: its alerts
    and its place in the job's view go to that job's owner."""
    if not job_id or not reservation_ids:
        return
    others = sorted(
        set(
            s.scalars(
                select(KnownReservation.job_id).where(KnownReservation.id.in_(reservation_ids))
            )
        )
        - {job_id}
    )
    if others:
        message = f"its reservations are for job {', '.join(others)}, not {job_id}"
        raise InvalidInput(message, errors={"job_id": [message]})


def _job_of(s: Session, reservation_ids: Sequence[str]) -> _Job:
    """The job of the reservations a shipment made by hand carries, when shipments
    knows them and they agree on one. Shipments keeps only a reservation's job, part,
    quantity and warehouse; when it is needed, for whom and how urgently come from
    the shipments planned for those reservations before (say, one cancelled to be
    planned again by hand), and stay empty when there were none."""
    if not reservation_ids:
        return _Job()
    jobs = set(
        s.scalars(select(KnownReservation.job_id).where(KnownReservation.id.in_(reservation_ids)))
    )
    if len(jobs) != 1:
        return _Job()
    (job_id,) = jobs
    earlier = s.execute(
        select(Shipment.priority, Shipment.owner, Shipment.required_by)
        .where(
            Shipment.job_id == job_id,
            Shipment.id.in_(
                select(ShipmentLine.shipment_id).where(
                    ShipmentLine.reservation_id.in_(reservation_ids)
                )
            ),
        )
        .order_by(Shipment.created_at)
    ).all()
    priorities = [x.priority for x in earlier if x.priority in PRIORITIES]
    owners = [x.owner for x in earlier if x.owner]
    needed = [x.required_by for x in earlier if x.required_by is not None]
    return _Job(
        job_id=job_id,
        priority=min(priorities, key=PRIORITIES.index) if priorities else None,
        owner=owners[0] if owners else None,
        required_by=min(needed) if needed else None,
    )


def _locked_or_none(s: Session, shipment_id: str, lock: bool) -> Shipment | None:
    query = select(Shipment).where(Shipment.id == shipment_id)
    if lock:
        query = query.with_for_update()
    return s.scalar(query)


def _locked(s: Session, shipment_id: str, lock: bool) -> Shipment:
    shipment = _locked_or_none(s, shipment_id, lock)
    if shipment is None:
        raise NotFound(f"no shipment {shipment_id}")
    return shipment


def _history(
    s: Session, shipment: Shipment, at: datetime, note: str | None, actor: str | None
) -> None:
    s.add(
        ShipmentEvent(
            shipment_id=shipment.id, status=shipment.status, at=at, note=note, actor=actor
        )
    )


def _pass_checkpoint(s: Session, shipment: Shipment, name: str, at: datetime) -> None:
    """A scan at a planned checkpoint passes it, at the earliest scan heard there. Before
    the dispatch is recorded there are no checkpoints yet: the scan is kept for it."""
    if shipment.status == states.PLANNED:
        early = s.get(EarlyCheckpointScan, (shipment.id, name))
        if early is None:
            s.add(EarlyCheckpointScan(shipment_id=shipment.id, name=name, at=at))
        elif at < early.at:
            early.at = at
        return
    key = name_key(name)
    checkpoint = next(
        (
            c
            for c in s.scalars(select(Checkpoint).where(Checkpoint.shipment_id == shipment.id))
            if name_key(c.name) == key
        ),
        None,
    )
    if checkpoint is not None and (checkpoint.passed_at is None or at < checkpoint.passed_at):
        checkpoint.passed_at = at


def _hold_early_report(
    s: Session, shipment_id: str, action: str, at: datetime, note: str | None
) -> None:
    """A scan of a shipment whose dispatch is not recorded yet: an exception or a loss
    is kept for the dispatch to take up; a later scan that it moves on drops it."""
    report = s.get(EarlyReport, shipment_id)
    if action == "resume":
        if report is not None:
            s.delete(report)
    elif report is None:
        s.add(EarlyReport(shipment_id=shipment_id, action=action, at=at, note=note))
    else:
        report.action, report.at, report.note = action, at, note


def _event_note(event: Mapping[str, Any]) -> str | None:
    parts = [event["kind"].replace("_", " ")]
    if event.get("checkpoint"):
        parts.append(f"at {event['checkpoint']}")
    if event.get("location"):
        parts.append(f"({event['location']})")
    text = " ".join(parts)
    return f"{text}: {event['note']}" if event.get("note") else text
