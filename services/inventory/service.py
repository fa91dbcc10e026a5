"""Inventory's use cases: one function per action, each its own transaction.

Stock numbers change only through :func:`_change_stock`, a conditional UPDATE whose
WHERE clause is the rule (``available`` never below zero), followed by the ledger
line that explains the change. Row locks are always taken in the same order —
reservation rows, then stock rows, then unit rows — so concurrent actions queue
instead of deadlocking.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.inventory import rules
from services.inventory.models import (
    LaneTransit,
    Movement,
    Part,
    Reservation,
    ReservationEvent,
    ReservationUnit,
    ShipmentIssue,
    Stock,
    Unit,
    Warehouse,
)
from shared.bus.context import handled_message_id
from shared.bus.store import Transaction
from shared.clock import Clock, SystemClock
from shared.contracts import name_key
from shared.db import Database
from shared.errors import Conflict, DomainError, InvalidInput, NotFound

stock_t = Stock.__table__
unit_t = Unit.__table__
movement_t = Movement.__table__
reservation_t = Reservation.__table__
reservation_unit_t = ReservationUnit.__table__
reservation_event_t = ReservationEvent.__table__
lane_t = LaneTransit.__table__
# How much history a choice of warehouse reads, of one region pair and of every lane
# into a region: the recent past says most of the near future.
LANE_WINDOW = 500
REGION_LANES_WINDOW = 2000
# Transit hours by lane, as the ranking reads them.
LaneHistory = Mapping[rules.LaneKey, Sequence[float]]
# What a repeat of a reservation request must ask for again (warehouse, replaces: when
# given) to be answered with the reservation the first one made.
REPEATED_REQUEST_FIELDS = (
    "job_id",
    "part_number",
    "quantity",
    "priority",
    "required_by",
    "owner",
    "site",
    "warehouse",
    "replaces",
)


class ReservationRejected(Conflict):
    """Not enough stock where it was asked for: the problem lists alternatives."""

    title = "Not enough stock"
    type_slug = "not-enough-stock"


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int


@dataclass(frozen=True)
class StockLevel:
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Inventory:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self._catalogue = _Catalogue()

    # ==================================================================================
    # Warehouses and parts
    # ==================================================================================
    def create_warehouse(self, data: Mapping[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            same_code = s.scalar(
                select(Warehouse.code).where(func.lower(Warehouse.code) == data["code"].lower())
            )
            if same_code is not None:
                # LHS and lhs would be two warehouses no one could tell apart.
                raise Conflict(f"warehouse {same_code} exists already")
            warehouse = Warehouse(
                code=data["code"],
                name=data["name"],
                region=_region_of_others(s, data["region"], data["code"]),
                kind=data["kind"],
                created_at=now,
                updated_at=now,
            )
            s.add(warehouse)
            s.flush()
            self._catalogue.forget_regions()
            resource = warehouse_resource(warehouse)
            tx.publish("inventory.warehouse.created", subject=warehouse.code, data=resource)
        return resource

    def update_warehouse(self, code: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as tx:
            warehouse = _warehouse(tx.session, code)
            for name, value in changes.items():
                if name == "region":
                    value = _region_of_others(tx.session, value, code)
                setattr(warehouse, name, value)
            warehouse.updated_at = self.clock.now()
            tx.session.flush()
            self._catalogue.forget("warehouse", code)
            self._catalogue.forget_regions()
            resource = warehouse_resource(warehouse)
            tx.publish("inventory.warehouse.updated", subject=warehouse.code, data=resource)
        return resource

    def list_warehouses(self) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            rows = session.scalars(select(Warehouse).order_by(Warehouse.code)).all()
            return [warehouse_resource(w) for w in rows]

    def get_warehouse(self, code: str) -> dict[str, Any]:
        with self.db.reading() as session:
            return warehouse_resource(_warehouse(session, code))

    def create_part(self, data: Mapping[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as tx:
            if _part_or_none(tx.session, data["part_number"]) is not None:
                raise Conflict(f"part {data['part_number']} exists already")
            part = Part(
                part_number=data["part_number"],
                description=data["description"],
                serialized=data["serialized"],
                reorder_point=data.get("reorder_point"),
                created_at=self.clock.now(),
            )
            tx.session.add(part)
            tx.session.flush()
            resource = part_resource(part)
            tx.publish("inventory.part.created", subject=part.part_number, data=resource)
        return resource

    def update_part(self, part_number: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as tx:
            s = tx.session
            part = _part(s, part_number)
            reorder_point_before = part.reorder_point
            for name, value in changes.items():
                setattr(part, name, value)
            s.flush()
            self._catalogue.forget("part", part_number)
            resource = part_resource(part)
            tx.publish("inventory.part.updated", subject=part.part_number, data=resource)
            if part.reorder_point != reorder_point_before:
                # Stock that the new reorder point makes low (or no longer low) is
                # flagged as if the stock had moved.
                for code, on_hand, reserved in s.execute(
                    select(Warehouse.code, stock_t.c.on_hand, stock_t.c.reserved)
                    .join(stock_t, stock_t.c.warehouse_id == Warehouse.id)
                    .where(stock_t.c.part_id == part.id)
                    .order_by(Warehouse.code)
                ):
                    level = StockLevel(on_hand, reserved)
                    crossing = rules.reorder_point_crossing(
                        level.available, reorder_point_before, part.reorder_point
                    )
                    if crossing is not None:
                        _announce_low_stock(tx, crossing, part, code, level)
        return resource

    def list_parts(self) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            return [
                part_resource(p)
                for p in session.scalars(select(Part).order_by(Part.part_number)).all()
            ]

    def get_part(self, part_number: str) -> dict[str, Any]:
        with self.db.reading() as session:
            return part_resource(_part(session, part_number))

    # ==================================================================================
    # Receipts and adjustments
    # ==================================================================================
    def receive_stock(self, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        quantity: int = data["quantity"]
        serials: list[str] = list(data.get("serials") or [])
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            warehouse = _warehouse(s, data["warehouse"])
            part = _part(s, data["part_number"])
            _check_serials_given(part, serials, quantity, "quantity")
            reference = data.get("reference")
            if part.serialized:
                self._create_units(s, part, warehouse, serials, now)
            level, existed = _add_stock(s, warehouse.id, part.id, quantity)
            movement_ids = _add_movements(
                s,
                [
                    _movement(
                        "receipt", warehouse.id, part.id, qty, qty, 0, serial, None, reference, now
                    )
                    for qty, serial in _lines(quantity, serials)
                ],
            )
            return _announce_stock_change(
                tx,
                "received",
                part,
                warehouse.code,
                level,
                quantity if existed else None,
                movement_ids,
                quantity=quantity,
                serials=serials,
                reference=reference,
            )

    def _create_units(
        self, s: Session, part: Part, warehouse: Warehouse, serials: Sequence[str], now: datetime
    ) -> None:
        known = s.execute(
            select(Unit.serial, Unit.part_id, Unit.status).where(Unit.serial.in_(serials))
        ).all()
        # A unit written off (lost in transit, missing at a count) that turns up again
        # comes back under its own serial, its history kept.
        found = [u.serial for u in known if u.status == "written_off" and u.part_id == part.id]
        taken = sorted(u.serial for u in known if u.serial not in found)
        if taken:
            raise Conflict(f"serial numbers already known: {', '.join(taken[:10])}", serials=taken)
        if found:
            back = _shelve_units(
                s, warehouse.id, now, unit_t.c.serial.in_(found), unit_t.c.status == "written_off"
            )
            if back.rowcount != len(found):
                raise Conflict("a serial number was registered at the same moment")
        new = [serial for serial in serials if serial not in found]
        if not new:
            return
        try:
            with s.begin_nested():
                s.execute(
                    insert(unit_t),
                    [
                        {
                            "serial": serial,
                            "part_id": part.id,
                            "warehouse_id": warehouse.id,
                            "status": "available",
                            "reservation_id": None,
                            "location": None,
                            "updated_at": now,
                        }
                        for serial in new
                    ],
                )
        except IntegrityError:
            raise Conflict("a serial number was registered at the same moment") from None

    def adjust_stock(self, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        delta: int = data["delta"]
        serials: list[str] = list(data.get("serials") or [])
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            warehouse = _warehouse(s, data["warehouse"])
            part = _part(s, data["part_number"])
            reference = data["reason"]
            existed = True
            if delta > 0:
                _check_serials_given(part, serials, delta, "delta")
                if part.serialized:
                    self._create_units(s, part, warehouse, serials, now)
                level, existed = _add_stock(s, warehouse.id, part.id, delta)
            else:
                level = _change_stock(s, warehouse.id, part.id, on_hand=delta, reserved=0)
                if level is None:
                    current = _stock_level(s, warehouse.id, part.id)
                    floor = current.reserved
                    raise Conflict(
                        f"an adjustment of {delta} would leave {current.on_hand + delta} on hand "
                        f"of {part.part_number} at {warehouse.code}, fewer than the {floor} "
                        "promised to jobs"
                        if floor > 0
                        else f"an adjustment of {delta} would leave {current.on_hand + delta} on "
                        f"hand of {part.part_number} at {warehouse.code}, below zero",
                        stock=stock_resource(warehouse.code, part, current),
                    )
                # Which units are gone matters only once the count allows it at all. Not
                # named, they are units on the shelf that no one has been promised.
                if part.serialized and not serials:
                    serials = self._pick_units(s, part.id, warehouse.id, -delta)
                _check_serials_given(part, serials, -delta, "delta")
                if part.serialized:
                    removed = (
                        s.execute(
                            update(unit_t)
                            .where(
                                unit_t.c.serial.in_(serials),
                                unit_t.c.part_id == part.id,
                                unit_t.c.warehouse_id == warehouse.id,
                                unit_t.c.status == "available",
                            )
                            .values(status="written_off", updated_at=now)
                            .returning(unit_t.c.serial)
                        )
                        .scalars()
                        .all()
                    )
                    missing = sorted(set(serials) - set(removed))
                    if missing:
                        raise Conflict(
                            "these units are not available in the warehouse: "
                            + ", ".join(missing[:10]),
                            serials=missing,
                        )
            sign = 1 if delta > 0 else -1
            movement_ids = _add_movements(
                s,
                [
                    _movement(
                        "adjustment",
                        warehouse.id,
                        part.id,
                        qty,
                        sign * qty,
                        0,
                        serial,
                        None,
                        reference,
                        now,
                    )
                    for qty, serial in _lines(abs(delta), serials)
                ],
            )
            return _announce_stock_change(
                tx,
                "adjusted",
                part,
                warehouse.code,
                level,
                delta if existed else None,
                movement_ids,
                delta=delta,
                reason=reference,
                serials=serials,
                actor=actor,
            ) | {"serials": serials}

    def list_stock(
        self,
        *,
        part_number: str | None = None,
        warehouse: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> Page:
        query = _stock_lines(part_number, warehouse)
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.order_by(Part.part_number, Warehouse.code)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
        items = []
        for code, number, reorder_point, on_hand, reserved in rows:
            available = on_hand - reserved
            items.append(
                {
                    "warehouse": code,
                    "part_number": number,
                    "on_hand": on_hand,
                    "reserved": reserved,
                    "available": available,
                    "reorder_point": reorder_point,
                    "low": rules.is_low(available, reorder_point),
                }
            )
        return Page(items, total)

    def count_low_stock(
        self, *, part_number: str | None = None, warehouse: str | None = None
    ) -> int:
        """Stock lines at or below their part's reorder point, on every page."""
        low = _stock_lines(part_number, warehouse).where(
            Part.reorder_point.is_not(None),
            Stock.on_hand - Stock.reserved <= Part.reorder_point,
        )
        with self.db.reading() as session:
            return session.scalar(select(func.count()).select_from(low.subquery())) or 0

    # ==================================================================================
    # Reservations
    # ==================================================================================
    def reserve_part(self, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        """Promise ``quantity`` of a part to a job, from the named warehouse or the one
        whose lane predicts the earliest arrival. Raises :class:`ReservationRejected`
        (409, with alternatives) when there is not enough."""
        preempt: list[str] = list(data.get("preempt") or [])
        problem = rules.preemption_problem(data["priority"], preempt)
        if problem:
            raise InvalidInput(problem, errors={"preempt": [problem]})
        request_id = data.get("request_id")
        try:
            return self._reserve_part(data, preempt, actor)
        except (IntegrityError, DomainError) as exc:
            # The same request_id twice at once: the second, refused by the unique key
            # or by the stock the first just took, answers with the first.
            if not request_id or (
                isinstance(exc, DomainError) and request_id == handled_message_id()
            ):
                raise
            with self.db.transaction() as tx:
                existing = tx.session.execute(
                    _sql().reservation_by_request, {"request_id": request_id}
                ).scalar()
                if existing is None:
                    raise
                return _made_already(tx, existing, data)

    def _reserve_part(
        self, data: Mapping[str, Any], preempt: list[str], actor: str | None
    ) -> dict[str, Any]:
        now = self.clock.now()
        reservation_id = str(uuid.uuid4())
        try:
            return self._reserve_in_transaction(data, preempt, actor, reservation_id, now)
        except _PreemptionUndone as undone:
            # Described after the rollback, with the preempted reservations still there.
            with self.db.reading() as s:
                data = self._site_region_as_known(s, data)
                raise self._rejection(s, undone.part, data, data["quantity"], now) from None

    def _reserve_in_transaction(
        self,
        data: Mapping[str, Any],
        preempt: list[str],
        actor: str | None,
        reservation_id: str,
        now: datetime,
    ) -> dict[str, Any]:
        quantity: int = data["quantity"]
        request_id = data.get("request_id")
        with self.db.transaction() as tx:
            s = tx.session
            data = self._site_region_as_known(s, data)
            sql = _sql()
            # A command's own id as its request_id needs no look-up: the inbox refuses
            # a repeat of the message.
            if request_id and request_id != handled_message_id():
                existing = s.execute(
                    sql.reservation_by_request, {"request_id": request_id}
                ).scalar()
                if existing:
                    return _made_already(tx, existing, data)
            if data.get("replaces"):
                _check_replaceable(s, data["replaces"], data)
            part = self._catalogue.part(s, data["part_number"])
            site_region = data["site"]["region"]
            if data.get("warehouse"):
                named = self._catalogue.warehouse(s, data["warehouse"])
                candidates = [
                    self._route_from(
                        s, rules.Source(named.id, named.code, named.region, 0), site_region
                    )
                ]
            else:
                candidates = self._ranked_sources(s, part.id, site_region, minimum=quantity)
            preempted: list[Reservation] = []
            if preempt:
                preempted = self._preempt(
                    s,
                    part,
                    preempt,
                    candidates[0].source if data.get("warehouse") else None,
                    reservation_id,
                    now,
                    actor,
                )
                if not data.get("warehouse"):
                    origin = s.get(Warehouse, preempted[0].warehouse_id)
                    candidates = [
                        self._route_from(
                            s, rules.Source(origin.id, origin.code, origin.region, 0), site_region
                        )
                    ]
            chosen: rules.RankedSource | None = None
            level: StockLevel | None = None
            for candidate in candidates:
                level = _change_stock(s, candidate.source.warehouse_id, part.id, 0, quantity)
                if level is not None:
                    chosen = candidate
                    break
            if chosen is None or level is None:
                if preempted:
                    raise _PreemptionUndone(part)
                raise self._rejection(s, part, data, quantity, now)
            warehouse_id = chosen.source.warehouse_id
            serials = (
                self._hold_units(s, part.id, warehouse_id, reservation_id, quantity, now)
                if part.serialized
                else []
            )
            row = {
                "id": reservation_id,
                "job_id": data["job_id"],
                "part_id": part.id,
                "warehouse_id": warehouse_id,
                "quantity": quantity,
                "status": "confirmed",
                "priority": data["priority"],
                "required_by": data["required_by"].astimezone(UTC),
                "owner": data["owner"],
                "site_name": data["site"]["name"],
                "site_region": site_region,
                "replaces": data.get("replaces"),
                "preempted_by": None,
                "shipment_id": data.get("shipment_id"),
                "request_id": request_id,
                "route_mode": chosen.mode,
                "route_carrier": chosen.carrier,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            # Nothing below reads these rows back: they go in one statement at commit.
            tx.insert_at_commit(reservation_t, [row])
            tx.insert_at_commit(
                reservation_unit_t,
                [{"reservation_id": reservation_id, "serial": serial} for serial in serials],
            )
            note = f"preempted {', '.join(r.id for r in preempted)}" if preempted else None
            history = {"status": "confirmed", "at": now, "note": note, "actor": actor}
            tx.insert_at_commit(
                reservation_event_t, [{"reservation_id": reservation_id, **history}]
            )
            tx.insert_at_commit(
                movement_t,
                [
                    _movement(
                        "reservation",
                        warehouse_id,
                        part.id,
                        qty,
                        0,
                        qty,
                        serial,
                        reservation_id,
                        f"job {data['job_id']}",
                        now,
                    )
                    for qty, serial in _lines(quantity, serials)
                ],
            )
            # Built from what was just written, not read back: this is the hot path.
            resource = _reservation_resource(
                row, part.part_number, chosen.source.code, chosen.source.region, serials, [history]
            )
            tx.publish("inventory.reservation.confirmed", subject=reservation_id, data=resource)
            for gone in reservation_resources(s, [r.id for r in preempted]):
                tx.publish(
                    "inventory.reservation.preempted", subject=gone["id"], data=gone, reply=False
                )
            before = level.available + quantity - sum(r.quantity for r in preempted)
            _announce_crossing(tx, part, chosen.source.code, before, level)
        return resource

    def locate_part(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Where ``quantity`` of a part could come from for a site, and when it could
        arrive: announced as ``inventory.stock.located``, the answer to the command."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            part = self._catalogue.part(s, data["part_number"])
            region = self._catalogue.region_as_known(s, data["site"]["region"])
            alternatives = [
                {
                    "warehouse": ranked.source.code,
                    "available": ranked.source.available,
                    "estimated_arrival": ranked.estimated_arrival(now),
                }
                for ranked in self._ranked_sources(s, part.id, region, minimum=data["quantity"])
            ]
            located = {
                "part_number": part.part_number,
                "quantity": data["quantity"],
                "shipment_id": data.get("shipment_id"),
                "alternatives": _jsonable(alternatives),
            }
            tx.publish("inventory.stock.located", subject=part.part_number, data=located)
        return located

    def _ranked_sources(
        self, s: Session, part_id: int, site_region: str, *, minimum: int
    ) -> list[rules.RankedSource]:
        rows = s.execute(
            select(Warehouse.id, Warehouse.code, Warehouse.region, Stock.on_hand - Stock.reserved)
            .join(Stock, Stock.warehouse_id == Warehouse.id)
            .where(Stock.part_id == part_id, Stock.on_hand - Stock.reserved >= minimum)
        ).all()
        sources = [rules.Source(*row) for row in rows]
        if not sources:
            return []
        return rules.rank_sources(sources, site_region, self._catalogue.lanes(s, site_region))

    def _route_from(self, s: Session, source: rules.Source, site_region: str) -> rules.RankedSource:
        """A warehouse given (by name, or by a preemption) and its fastest lane to the site."""
        history = self._catalogue.lanes(s, site_region, source.region)
        return rules.fastest_lane(source, site_region, history)

    def _site_region_as_known(self, s: Session, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """The request with its site's region written as the warehouses there write it
        (``Sichuan`` for a site where the depot says ``sichuan``): the region decides
        which warehouse is near and which lanes' history counts."""
        site = data["site"]
        region = self._catalogue.region_as_known(s, site["region"])
        return data if region == site["region"] else {**data, "site": {**site, "region": region}}

    def _rejection(
        self, s: Session, part: Part, data: Mapping[str, Any], quantity: int, now: datetime
    ) -> ReservationRejected:
        alternatives = [
            {
                "warehouse": ranked.source.code,
                "available": ranked.source.available,
                "estimated_arrival": ranked.estimated_arrival(now),
            }
            for ranked in self._ranked_sources(s, part.id, data["site"]["region"], minimum=1)
            if ranked.source.code != data.get("warehouse")
        ]
        extra: dict[str, Any] = {"alternatives": alternatives}
        # Units there but promised to other jobs: "none free" is not "none in stock".
        reserved = func.sum(Reservation.quantity)
        extra["held"] = [
            {"warehouse": code, "reserved": count}
            for code, count in s.execute(
                select(Warehouse.code, reserved)
                .join(Reservation, Reservation.warehouse_id == Warehouse.id)
                .where(
                    Reservation.part_id == part.id,
                    Reservation.status == "confirmed",
                    Reservation.job_id != data["job_id"],
                )
                .group_by(Warehouse.code)
                .order_by(reserved.desc(), Warehouse.code)
                .limit(20)
            )
        ]
        if data["priority"] == "machine_down":
            rows = s.execute(
                select(Reservation, Warehouse.code)
                .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
                .where(
                    Reservation.part_id == part.id,
                    Reservation.status == "confirmed",
                    Reservation.priority == "routine",
                )
                .order_by(Reservation.required_by.desc())
                .limit(50)
            ).all()
            extra["preemptible"] = [
                {
                    "id": r.id,
                    "job_id": r.job_id,
                    "warehouse": code,
                    "quantity": r.quantity,
                    "required_by": r.required_by,
                    "owner": r.owner,
                }
                for r, code in rows
            ]
        where = f" at {data['warehouse']}" if data.get("warehouse") else " in any warehouse"
        return ReservationRejected(
            f"not enough {part.part_number} available{where} for {quantity}", **_jsonable(extra)
        )

    def _hold_units(
        self,
        s: Session,
        part_id: int,
        warehouse_id: int,
        reservation_id: str,
        quantity: int,
        now: datetime,
    ) -> list[str]:
        serials = self._pick_units(s, part_id, warehouse_id, quantity)
        s.execute(
            update(unit_t)
            .where(unit_t.c.serial.in_(serials))
            .values(status="reserved", reservation_id=reservation_id, updated_at=now)
        )
        return serials

    def _pick_units(self, s: Session, part_id: int, warehouse_id: int, quantity: int) -> list[str]:
        """Units on the shelf and promised to no one, in serial order. The caller has
        locked the stock row already, so no one else picks units here meanwhile."""
        pick = (
            select(unit_t.c.serial)
            .where(
                unit_t.c.part_id == part_id,
                unit_t.c.warehouse_id == warehouse_id,
                unit_t.c.status == "available",
            )
            .order_by(unit_t.c.serial)
            .limit(quantity)
        )
        if self.db.is_postgres:
            pick = pick.with_for_update()
        serials = list(s.scalars(pick).all())
        if len(serials) < quantity:
            raise Conflict("the stock count and the serial units disagree; count the units")
        return serials

    def _preempt(
        self,
        s: Session,
        part: Part,
        ids: Sequence[str],
        named: rules.Source | None,
        new_id: str,
        now: datetime,
        actor: str | None,
    ) -> list[Reservation]:
        query = select(Reservation).where(Reservation.id.in_(ids)).order_by(Reservation.id)
        if self.db.is_postgres:
            query = query.with_for_update()
        found = {r.id: r for r in s.scalars(query).all()}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no reservation {', '.join(missing)} to preempt")
        warehouses = {r.warehouse_id for r in found.values()}
        for r in found.values():
            if r.part_id != part.id:
                raise Conflict(f"reservation {r.id} is for another part")
            if r.priority != "routine":
                raise Conflict(f"reservation {r.id} is {r.priority}; only routine ones yield")
            if r.status != "confirmed":
                raise Conflict(f"reservation {r.id} is {r.status}; only a confirmed one yields")
        if len(warehouses) > 1 or (named is not None and warehouses != {named.warehouse_id}):
            raise Conflict("the reservations to preempt must hold stock at the warehouse chosen")
        for r in found.values():
            self._give_back(s, r, "preempted", now, note=f"preempted by {new_id}", actor=actor)
            r.preempted_by = new_id
        s.flush()
        return [found[i] for i in ids]

    def _give_back(
        self,
        s: Session,
        r: Reservation,
        status: str,
        now: datetime,
        *,
        note: str | None,
        actor: str | None,
    ) -> None:
        """Turn a confirmed reservation into ``status`` and return its stock and units."""
        r.status = status
        r.version += 1
        r.updated_at = now
        level = _change_stock(s, r.warehouse_id, r.part_id, 0, -r.quantity)
        if level is None:
            raise Conflict("the stock row disagrees with the reservation; count the stock")
        serials = (
            s.execute(
                update(unit_t)
                .where(unit_t.c.reservation_id == r.id, unit_t.c.status == "reserved")
                .values(status="available", reservation_id=None, updated_at=now)
                .returning(unit_t.c.serial)
            )
            .scalars()
            .all()
        )
        _add_history(s, r.id, status, now, note=note, actor=actor)
        _add_movements(
            s,
            [
                _movement(
                    "release",
                    r.warehouse_id,
                    r.part_id,
                    qty,
                    0,
                    -qty,
                    serial,
                    r.id,
                    note or status,
                    now,
                )
                for qty, serial in _lines(r.quantity, sorted(serials))
            ],
        )
        s.flush()

    def release_reservation(
        self, reservation_id: str, reason: str | None = None, *, actor: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            r = _reservation_for_update(s, reservation_id, self.db.is_postgres)
            if r.status != "confirmed":
                raise Conflict(
                    f"reservation {r.id} is {r.status}; only a confirmed reservation can be "
                    "released",
                    current_status=r.status,
                )
            part = s.get(Part, r.part_id)
            warehouse = s.get(Warehouse, r.warehouse_id)
            self._give_back(s, r, "released", now, note=reason, actor=actor)
            resource = reservation_resources(s, [r.id])[0]
            tx.publish("inventory.reservation.released", subject=r.id, data=resource)
            level = _stock_level(s, r.warehouse_id, r.part_id)
            _announce_crossing(tx, part, warehouse.code, level.available - r.quantity, level)
        return resource

    def get_reservation(self, reservation_id: str) -> dict[str, Any]:
        with self.db.reading() as session:
            resources = reservation_resources(session, [reservation_id])
        if not resources:
            raise NotFound(f"no reservation {reservation_id}")
        return resources[0]

    def list_reservations(
        self,
        *,
        job_id: str | None = None,
        status: str | None = None,
        part_number: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> Page:
        query = select(Reservation.id)
        if job_id:
            query = query.where(Reservation.job_id == job_id)
        if status:
            query = query.where(Reservation.status == status)
        if part_number:
            query = query.join(Part, Part.id == Reservation.part_id).where(
                Part.part_number == part_number
            )
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            ids = session.scalars(
                query.order_by(Reservation.created_at, Reservation.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            ).all()
            return Page(reservation_resources(session, list(ids)), total)

    def reject_command(
        self,
        event_type: str,
        envelope: Mapping[str, Any],
        error: DomainError,
        *,
        request: Mapping[str, Any],
    ) -> None:
        """Answer a command that could not be carried out (not enough stock, unknown
        reservation...) with its ``*.rejected`` event."""
        data: dict[str, Any] = {
            "command_id": envelope["id"],
            "request_id": request.get("request_id"),
            "status": "rejected",
            "reason": error.type_slug,
            "detail": error.detail,
            **{
                k: request[k]
                for k in ("job_id", "part_number", "quantity", "reservation_id")
                if k in request
            },
            **_jsonable(error.extra),
        }
        if isinstance(error, InvalidInput):
            data["errors"] = error.errors
        with self.db.transaction() as tx:
            tx.publish(event_type, subject=envelope["id"], data=data)

    # ==================================================================================
    # Shipments: stock leaves on dispatch, arrives or is written off at the end
    # ==================================================================================
    def issue_for_shipment(self, shipment: Mapping[str, Any]) -> None:
        """A dispatched shipment: its reserved lines are issued (reservation
        ``issued``), its unreserved lines leave from what is available; units go
        ``in_transit``. A transfer's lines are ``transfer_out`` in the ledger."""
        with self.db.transaction() as tx:
            self._issue(tx, shipment, self.clock.now())

    def settle_delivered_shipment(self, shipment: Mapping[str, Any]) -> None:
        """A delivered shipment: reservations ``fulfilled``; units at the site (a
        ``delivery`` line in the ledger), or received into the destination warehouse
        (``transfer_in``)."""
        now = self.clock.now()
        with self._catalogue.learning_lanes(), self.db.transaction() as tx:
            s = tx.session
            rows = self._issue(tx, shipment, now)
            destination = shipment["destination"]
            target = (
                _warehouse_or_none(s, destination["warehouse"])
                if destination.get("warehouse")
                else None
            )
            reference = f"shipment {shipment['id']}"
            for row in rows:
                if row.settled is not None:
                    continue
                row.settled = "fulfilled"
                serials = [x for x in row.serials.split(",") if x]
                if target is not None and row.quantity:
                    part = s.get(Part, row.part_id)
                    level, existed = _add_stock(s, target.id, part.id, row.quantity)
                    _shelve_units(s, target.id, now, unit_t.c.serial.in_(serials))
                    _add_movements(
                        s,
                        [
                            _movement(
                                "transfer_in",
                                target.id,
                                part.id,
                                qty,
                                qty,
                                0,
                                serial,
                                row.reservation_id,
                                reference,
                                now,
                            )
                            for qty, serial in _lines(row.quantity, serials)
                        ],
                    )
                    _announce_crossing(
                        tx,
                        part,
                        target.code,
                        level.available - row.quantity if existed else None,
                        level,
                    )
                elif row.quantity:
                    if serials:
                        s.execute(
                            update(unit_t)
                            .where(unit_t.c.serial.in_(serials))
                            .values(
                                status="at_site", location=destination.get("site"), updated_at=now
                            )
                        )
                    _add_movements(
                        s,
                        _explaining_lines(
                            "delivery",
                            row,
                            serials,
                            f"{reference} delivered to {destination.get('site')}",
                            now,
                        ),
                    )
                self._end_reservation(tx, row.reservation_id, "issued", "fulfilled", reference, now)
            self._observe_lane(s, shipment, now)

    def settle_lost_shipment(self, shipment: Mapping[str, Any]) -> None:
        """A lost shipment: its units are written off and its reservations ``lost``."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            reference = f"shipment {shipment['id']} lost in transit"
            for row in self._issue(tx, shipment, now):
                if row.settled is not None:
                    continue
                row.settled = "lost"
                serials = [x for x in row.serials.split(",") if x]
                if serials:
                    s.execute(
                        update(unit_t)
                        .where(unit_t.c.serial.in_(serials))
                        .values(status="written_off", location=None, updated_at=now)
                    )
                if row.quantity:
                    _add_movements(s, _explaining_lines("write_off", row, serials, reference, now))
                self._end_reservation(tx, row.reservation_id, "issued", "lost", reference, now)

    def _issue(
        self, tx: Transaction, shipment: Mapping[str, Any], now: datetime
    ) -> list[ShipmentIssue]:
        s = tx.session
        existing = s.scalars(
            select(ShipmentIssue)
            .where(ShipmentIssue.shipment_id == shipment["id"])
            .order_by(ShipmentIssue.line_no)
        ).all()
        if existing:
            return list(existing)
        kind = "transfer_out" if shipment["destination"].get("warehouse") else "issue"
        reference = f"shipment {shipment['id']}"
        rows = []
        for line_no, line in enumerate(shipment["lines"], start=1):
            if line.get("reservation_id"):
                row = self._issue_reservation(
                    tx, line["reservation_id"], shipment["id"], kind, reference, now
                )
                if row is None:
                    # Released or preempted while the dispatch was on its way: the part
                    # left all the same, so it leaves the stock as a line of its own.
                    row = self._issue_unreserved(tx, shipment, line, kind, reference, now)
            else:
                row = self._issue_unreserved(tx, shipment, line, kind, reference, now)
            if row is None:
                continue
            row.shipment_id = shipment["id"]
            row.line_no = line_no
            s.add(row)
            rows.append(row)
        s.flush()
        return rows

    def _issue_reservation(
        self,
        tx: Transaction,
        reservation_id: str,
        shipment_id: str,
        kind: str,
        reference: str,
        now: datetime,
    ) -> ShipmentIssue | None:
        s = tx.session
        query = select(Reservation).where(Reservation.id == reservation_id)
        if self.db.is_postgres:
            query = query.with_for_update()
        r = s.scalar(query)
        if r is None or r.status in ("released", "preempted"):
            return None
        if r.status != "confirmed":
            # Issued, fulfilled or lost already: this dispatch moves nothing more of it.
            return ShipmentIssue(
                part_id=r.part_id,
                warehouse_id=r.warehouse_id,
                quantity=0,
                serials="",
                reservation_id=None,
                settled=None,
            )
        if _change_stock(s, r.warehouse_id, r.part_id, -r.quantity, -r.quantity) is None:
            raise Conflict("the stock row disagrees with the reservation; count the stock")
        serials = sorted(
            s.execute(
                update(unit_t)
                .where(unit_t.c.reservation_id == r.id, unit_t.c.status == "reserved")
                .values(status="in_transit", location=reference, updated_at=now)
                .returning(unit_t.c.serial)
            )
            .scalars()
            .all()
        )
        _add_movements(
            s,
            [
                _movement(
                    kind, r.warehouse_id, r.part_id, qty, -qty, -qty, serial, r.id, reference, now
                )
                for qty, serial in _lines(r.quantity, serials)
            ],
        )
        r.shipment_id = shipment_id  # the shipment it left on, from now on
        self._end_reservation(tx, r.id, "confirmed", "issued", reference, now)
        return ShipmentIssue(
            part_id=r.part_id,
            warehouse_id=r.warehouse_id,
            quantity=r.quantity,
            serials=",".join(serials),
            reservation_id=r.id,
            settled=None,
        )

    def _issue_unreserved(
        self,
        tx: Transaction,
        shipment: Mapping[str, Any],
        line: Mapping[str, Any],
        kind: str,
        reference: str,
        now: datetime,
    ) -> ShipmentIssue | None:
        s = tx.session
        origin = _warehouse_or_none(s, shipment["origin"])
        part = _part_or_none(s, line["part_number"])
        if origin is None or part is None:
            return None
        quantity = line["quantity"]
        named = list(line.get("serials") or []) if part.serialized else []
        # Units named on the line travel, or nothing does: another unit is not taken
        # in their place without anyone knowing.
        absent = self._units_not_available(s, part.id, origin.id, named)
        level = None if absent else _change_stock(s, origin.id, part.id, -quantity, 0)
        if level is None:
            available = _stock_level(s, origin.id, part.id).available
            detail = (
                f"shipment {shipment['id']} left with {part.part_number} "
                f"{', '.join(absent)}, not available at {origin.code}"
                if absent
                else f"shipment {shipment['id']} left with {quantity} {part.part_number} "
                f"but only {available} were available at {origin.code}"
            )
            tx.publish(
                "inventory.stock.shortfall",
                subject=f"{part.part_number}@{origin.code}",
                data={
                    "shipment_id": shipment["id"],
                    "warehouse": origin.code,
                    "part_number": part.part_number,
                    "quantity": quantity,
                    "available": available,
                    "serials": absent,
                    "detail": detail,
                },
                reply=False,
            )
            return ShipmentIssue(
                part_id=part.id,
                warehouse_id=origin.id,
                quantity=0,
                serials="",
                reservation_id=None,
                settled=None,
            )
        serials: list[str] = []
        if part.serialized:
            serials = sorted(named) or self._pick_units(s, part.id, origin.id, quantity)
            s.execute(
                update(unit_t)
                .where(unit_t.c.serial.in_(serials))
                .values(status="in_transit", location=reference, updated_at=now)
            )
        _add_movements(
            s,
            [
                _movement(kind, origin.id, part.id, qty, -qty, 0, serial, None, reference, now)
                for qty, serial in _lines(quantity, serials)
            ],
        )
        _announce_crossing(tx, part, origin.code, level.available + quantity, level)
        return ShipmentIssue(
            part_id=part.id,
            warehouse_id=origin.id,
            quantity=quantity,
            serials=",".join(serials),
            reservation_id=None,
            settled=None,
        )

    def _units_not_available(
        self, s: Session, part_id: int, warehouse_id: int, serials: Sequence[str]
    ) -> list[str]:
        """Those of ``serials`` that are not units of the part available here; a unit
        named twice is there once."""
        if not serials:
            return []
        twice = sorted({x for x in serials if serials.count(x) > 1})
        if twice:
            return twice
        here = set(
            s.scalars(
                select(unit_t.c.serial).where(
                    unit_t.c.serial.in_(serials),
                    unit_t.c.part_id == part_id,
                    unit_t.c.warehouse_id == warehouse_id,
                    unit_t.c.status == "available",
                )
            )
        )
        return sorted(set(serials) - here)

    def _end_reservation(
        self,
        tx: Transaction,
        reservation_id: str | None,
        expected: str,
        status: str,
        note: str,
        now: datetime,
    ) -> None:
        if reservation_id is None:
            return
        s = tx.session
        r = s.get(Reservation, reservation_id)
        if r is None or r.status != expected:
            return
        r.status = status
        r.version += 1
        r.updated_at = now
        _add_history(s, r.id, status, now, note=note)
        s.flush()
        tx.publish(
            f"inventory.reservation.{status}",
            subject=r.id,
            data=reservation_resources(s, [r.id])[0],
        )

    def _observe_lane(self, s: Session, shipment: Mapping[str, Any], now: datetime) -> None:
        dispatched, delivered = shipment.get("dispatched_at"), shipment.get("delivered_at")
        origin_region = shipment.get("origin_region")
        destination_region = shipment["destination"].get("region")
        if not (dispatched and delivered and origin_region and destination_region):
            return
        hours = (delivered - dispatched).total_seconds() / 3600
        # A delivery recorded at (or clamped to) its dispatch says nothing of the lane;
        # kept, it would make a warehouse look minutes away.
        if hours <= 0 or s.get(LaneTransit, shipment["id"]) is not None:
            return
        s.add(
            LaneTransit(
                shipment_id=shipment["id"],
                origin_region=name_key(origin_region),
                destination_region=name_key(destination_region),
                mode=shipment.get("mode"),
                carrier=shipment.get("carrier") or None,
                hours=hours,
                observed_at=now,
            )
        )

    # ==================================================================================
    # The ledger and units
    # ==================================================================================
    def list_movements(
        self,
        *,
        part_number: str | None = None,
        warehouse: str | None = None,
        since: datetime | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> Page:
        query = _of_part_at(
            select(Movement, Warehouse.code, Part.part_number)
            .join(Warehouse, Warehouse.id == Movement.warehouse_id)
            .join(Part, Part.id == Movement.part_id),
            part_number,
            warehouse,
        )
        if since:
            query = query.where(Movement.at >= since)
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.order_by(Movement.id).offset((page - 1) * page_size).limit(page_size)
            ).all()
        return Page([movement_resource(m, code, number) for m, code, number in rows], total)

    def get_unit(self, serial: str) -> dict[str, Any]:
        with self.db.reading() as session:
            row = session.execute(
                select(Unit, Part.part_number, Warehouse.code)
                .join(Part, Part.id == Unit.part_id)
                .outerjoin(Warehouse, Warehouse.id == Unit.warehouse_id)
                .where(Unit.serial == serial)
            ).first()
            if row is None:
                raise NotFound(f"no unit with serial {serial}")
            unit, number, code = row
            history = session.execute(
                select(Movement, Warehouse.code)
                .join(Warehouse, Warehouse.id == Movement.warehouse_id)
                .where(Movement.serial == serial)
                .order_by(Movement.id)
            ).all()
        return {
            "serial": unit.serial,
            "part_number": number,
            "warehouse": code,
            "status": unit.status,
            "reservation_id": unit.reservation_id,
            "location": unit.location,
            "history": [movement_resource(m, c, number) for m, c in history],
        }

    def ledger_balances(self) -> list[dict[str, Any]]:
        """Per stock row: its numbers and what the ledger says they should be."""
        with self.db.reading() as session:
            sums = (
                select(
                    Movement.warehouse_id,
                    Movement.part_id,
                    func.sum(Movement.on_hand_change).label("on_hand"),
                    func.sum(Movement.reserved_change).label("reserved"),
                )
                .group_by(Movement.warehouse_id, Movement.part_id)
                .subquery()
            )
            rows = session.execute(
                select(
                    Warehouse.code,
                    Part.part_number,
                    Stock.on_hand,
                    Stock.reserved,
                    sums.c.on_hand,
                    sums.c.reserved,
                )
                .join(Warehouse, Warehouse.id == Stock.warehouse_id)
                .join(Part, Part.id == Stock.part_id)
                .outerjoin(
                    sums,
                    and_(
                        sums.c.warehouse_id == Stock.warehouse_id, sums.c.part_id == Stock.part_id
                    ),
                )
            ).all()
        return [
            {
                "warehouse": code,
                "part_number": number,
                "on_hand": on_hand,
                "reserved": reserved,
                "ledger_on_hand": int(l_on_hand or 0),
                "ledger_reserved": int(l_reserved or 0),
            }
            for code, number, on_hand, reserved, l_on_hand, l_reserved in rows
        ]


# ======================================================================================
# Resources: what the API shows and the events carry
# ======================================================================================
def warehouse_resource(w: Warehouse) -> dict[str, Any]:
    return {
        "code": w.code,
        "name": w.name,
        "region": w.region,
        "kind": w.kind,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    }


def part_resource(p: Part) -> dict[str, Any]:
    return {
        "part_number": p.part_number,
        "description": p.description,
        "serialized": p.serialized,
        "reorder_point": p.reorder_point,
        "created_at": p.created_at,
    }


def stock_resource(warehouse_code: str, part: Part, level: StockLevel) -> dict[str, Any]:
    return {
        "warehouse": warehouse_code,
        "part_number": part.part_number,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "available": level.available,
        "reorder_point": part.reorder_point,
        "low": rules.is_low(level.available, part.reorder_point),
    }


def movement_resource(m: Movement, warehouse_code: str, part_number: str) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "warehouse": warehouse_code,
        "part_number": part_number,
        "quantity": m.quantity,
        "on_hand_change": m.on_hand_change,
        "reserved_change": m.reserved_change,
        "serial": m.serial,
        "reservation_id": m.reservation_id,
        "reference": m.reference,
        "at": m.at,
    }


def reservation_resources(s: Session, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Reservations as the API shows them, in the order of ``ids``."""
    if not ids:
        return []
    rows = s.execute(
        select(Reservation, Part.part_number, Warehouse.code, Warehouse.region)
        .join(Part, Part.id == Reservation.part_id)
        .join(Warehouse, Warehouse.id == Reservation.warehouse_id)
        .where(Reservation.id.in_(ids))
    ).all()
    serials: dict[str, list[str]] = {}
    for reservation_id, serial in s.execute(
        select(ReservationUnit.reservation_id, ReservationUnit.serial)
        .where(ReservationUnit.reservation_id.in_(ids))
        .order_by(ReservationUnit.serial)
    ):
        serials.setdefault(reservation_id, []).append(serial)
    history: dict[str, list[dict[str, Any]]] = {}
    for event in s.scalars(
        select(ReservationEvent)
        .where(ReservationEvent.reservation_id.in_(ids))
        .order_by(ReservationEvent.id)
    ):
        history.setdefault(event.reservation_id, []).append(
            {"status": event.status, "at": event.at, "note": event.note, "actor": event.actor}
        )
    by_id = {}
    for r, part_number, code, region in rows:
        by_id[r.id] = _reservation_resource(
            {column.key: getattr(r, column.key) for column in reservation_t.columns},
            part_number,
            code,
            region,
            serials.get(r.id, []),
            history.get(r.id, []),
        )
    return [by_id[i] for i in ids if i in by_id]


# ======================================================================================
# Statements
# ======================================================================================
def _reservation_resource(
    r: Mapping[str, Any],
    part_number: str,
    warehouse: str,
    warehouse_region: str,
    serials: list[str],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": r["id"],
        "job_id": r["job_id"],
        "part_number": part_number,
        "quantity": r["quantity"],
        "warehouse": warehouse,
        "warehouse_region": warehouse_region,
        "status": r["status"],
        "priority": r["priority"],
        "required_by": r["required_by"],
        "owner": r["owner"],
        "site": {"name": r["site_name"], "region": r["site_region"]},
        "serials": serials,
        "replaces": r["replaces"],
        "preempted_by": r["preempted_by"],
        "shipment_id": r["shipment_id"],
        "request_id": r["request_id"],
        # The way the part is expected to travel (mode and carrier), when a lane's
        # history chose its warehouse: its shipment is planned that way.
        "route": (
            {"mode": r["route_mode"], "carrier": r["route_carrier"]} if r["route_mode"] else None
        ),
        "version": r["version"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
        "history": history,
    }


@dataclass(frozen=True)
class _Statements:
    """The hot path's statements, built once; only their parameters change."""

    part_by_number: Any
    warehouse_by_code: Any
    reservation_by_request: Any
    change_stock: Any
    insert_history: Any
    insert_movement: Any
    lanes_into: Any
    lanes_between: Any


@functools.cache
def _sql() -> _Statements:
    part_t, warehouse_t = Part.__table__, Warehouse.__table__
    on_hand, reserved = bindparam("on_hand_change"), bindparam("reserved_change")
    lanes = (
        select(lane_t.c.origin_region, lane_t.c.mode, lane_t.c.carrier, lane_t.c.hours)
        .where(lane_t.c.destination_region == bindparam("destination_region"))
        .order_by(lane_t.c.observed_at.desc())
    )
    return _Statements(
        part_by_number=select(
            part_t.c.id, part_t.c.part_number, part_t.c.serialized, part_t.c.reorder_point
        ).where(part_t.c.part_number == bindparam("part_number")),
        warehouse_by_code=select(warehouse_t.c.id, warehouse_t.c.code, warehouse_t.c.region).where(
            warehouse_t.c.code == bindparam("code")
        ),
        reservation_by_request=select(reservation_t.c.id).where(
            reservation_t.c.request_id == bindparam("request_id")
        ),
        change_stock=update(stock_t)
        .where(
            stock_t.c.warehouse_id == bindparam("stock_warehouse"),
            stock_t.c.part_id == bindparam("stock_part"),
            stock_t.c.on_hand + on_hand >= stock_t.c.reserved + reserved,
            stock_t.c.reserved + reserved >= 0,
        )
        .values(on_hand=stock_t.c.on_hand + on_hand, reserved=stock_t.c.reserved + reserved)
        .returning(stock_t.c.on_hand, stock_t.c.reserved),
        insert_history=insert(reservation_event_t),
        insert_movement=insert(movement_t).returning(movement_t.c.id),
        lanes_into=lanes.limit(REGION_LANES_WINDOW),
        lanes_between=lanes.where(lane_t.c.origin_region == bindparam("origin_region")).limit(
            LANE_WINDOW
        ),
    )


def _unknown_part(part_number: str) -> NotFound:
    return NotFound(
        f"no part {part_number}", errors={"part_number": [f"unknown part {part_number}"]}
    )


def _unknown_warehouse(code: str) -> NotFound:
    return NotFound(f"no warehouse {code}", errors={"warehouse": [f"unknown warehouse {code}"]})


class _Catalogue:
    """Parts and warehouses as the reservation path needs them (ids, serialized flag,
    reorder point, region), and the lanes' transit history, kept a few seconds: they
    are read on every reservation and change seldom (lanes with each delivery). Ids
    and the serialized flag never change; an edit or a delivery handled in this
    process is seen at once, one handled by another process within the TTL."""

    TTL_SECONDS = 5.0
    MAX_LANE_ENTRIES = 1000

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lanes: dict[tuple[str, str | None], tuple[float, LaneHistory]] = {}
        # Each region's spelling by the warehouses there, by its name_key.
        self._regions: tuple[float, dict[str, str]] | None = None
        # A history read while a delivery is being learnt, or before, is not kept.
        self._lane_generation = 0
        self._learning = 0
        self._lock = threading.Lock()

    def part(self, s: Session, part_number: str) -> Any:
        """The part's id, number, serialized flag and reorder point."""
        return self._get(
            s,
            "part",
            part_number,
            _sql().part_by_number,
            {"part_number": part_number},
            _unknown_part,
        )

    def warehouse(self, s: Session, code: str) -> Any:
        """The warehouse's id, code and region."""
        return self._get(
            s, "warehouse", code, _sql().warehouse_by_code, {"code": code}, _unknown_warehouse
        )

    def region_as_known(self, s: Session, region: str) -> str:
        """``region`` as the warehouses write it, when one is there; else as given."""
        with self._lock:
            entry = self._regions
        if entry is None or entry[0] <= time.monotonic():
            spelt = {}
            for known in s.scalars(select(Warehouse.region).order_by(Warehouse.id)):
                spelt.setdefault(name_key(known), known)
            entry = (time.monotonic() + self.TTL_SECONDS, spelt)
            with self._lock:
                self._regions = entry
        return entry[1].get(name_key(region), region)

    def forget_regions(self) -> None:
        with self._lock:
            self._regions = None

    def lanes(
        self, s: Session, destination_region: str, origin_region: str | None = None
    ) -> LaneHistory:
        """Recent transit hours into one region (from one region, if given), by lane.
        Lanes are kept by their regions' name_key; a carrier typed in several cases is
        one carrier, spelled as its latest delivery spelled it."""
        destination_region = name_key(destination_region)
        origin_region = name_key(origin_region) if origin_region is not None else None
        key = (destination_region, origin_region)
        with self._lock:
            entry, generation = self._lanes.get(key), self._lane_generation
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        history = _lane_history(s, destination_region, origin_region)
        with self._lock:
            if generation == self._lane_generation and not self._learning:
                now = time.monotonic()
                if len(self._lanes) >= self.MAX_LANE_ENTRIES:
                    # Regions are free text in requests: keep only what is still fresh.
                    self._lanes = {k: v for k, v in self._lanes.items() if v[0] > now}
                self._lanes[key] = (now + self.TTL_SECONDS, history)
        return history

    @contextmanager
    def learning_lanes(self) -> Iterator[None]:
        """Around a transaction that may learn a transit time: the histories kept are
        dropped as it starts and again once it has committed or failed."""
        self._forget_lanes(+1)
        try:
            yield
        finally:
            self._forget_lanes(-1)

    def _forget_lanes(self, learning: int) -> None:
        with self._lock:
            self._lanes.clear()
            self._lane_generation += 1
            self._learning += learning

    def forget(self, kind: str, key: str) -> None:
        with self._lock:
            self._entries.pop((kind, key), None)

    def _get(
        self,
        s: Session,
        kind: str,
        key: str,
        statement: Any,
        params: dict[str, Any],
        unknown: Callable[[str], NotFound],
    ) -> Any:
        with self._lock:
            entry = self._entries.get((kind, key))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        row = s.execute(statement, params).first()
        if row is None:
            raise unknown(key)
        with self._lock:
            self._entries[(kind, key)] = (time.monotonic() + self.TTL_SECONDS, row)
        return row


def _region_of_others(s: Session, region: str, code: str) -> str:
    """A warehouse's region as the other warehouses there write it: one region is not
    two because a name was typed ``Tibet`` once and ``tibet`` before."""
    key = name_key(region)
    for known in s.scalars(
        select(Warehouse.region).where(Warehouse.code != code).order_by(Warehouse.id)
    ):
        if name_key(known) == key:
            return known
    return region


def _warehouse_or_none(s: Session, code: str) -> Warehouse | None:
    return s.scalar(select(Warehouse).where(Warehouse.code == code))


def _warehouse(s: Session, code: str) -> Warehouse:
    warehouse = _warehouse_or_none(s, code)
    if warehouse is None:
        raise _unknown_warehouse(code)
    return warehouse


def _part_or_none(s: Session, part_number: str) -> Part | None:
    return s.scalar(select(Part).where(Part.part_number == part_number))


def _part(s: Session, part_number: str) -> Part:
    part = _part_or_none(s, part_number)
    if part is None:
        raise _unknown_part(part_number)
    return part


def _reservation_for_update(s: Session, reservation_id: str, lock: bool) -> Reservation:
    query = select(Reservation).where(Reservation.id == reservation_id)
    if lock:
        query = query.with_for_update()
    r = s.scalar(query)
    if r is None:
        raise NotFound(f"no reservation {reservation_id}")
    return r


def _check_serials_given(part: Part, serials: Sequence[str], count: int, field: str) -> None:
    if part.serialized and len(serials) != count:
        message = (
            f"{part.part_number} is serialized: give one serial per unit "
            f"({count} expected, {len(serials)} given)"
        )
        raise InvalidInput(message, errors={"serials": [message]})
    if not part.serialized and serials:
        message = f"{part.part_number} is not serialized: serials are not taken"
        raise InvalidInput(message, errors={"serials": [message]})


def _lines(quantity: int, serials: Sequence[str]) -> list[tuple[int, str | None]]:
    """Ledger lines: one per serial unit, or one for a bulk quantity."""
    if serials:
        return [(1, serial) for serial in serials]
    return [(quantity, None)]


def _movement(
    kind: str,
    warehouse_id: int,
    part_id: int,
    quantity: int,
    on_hand_change: int,
    reserved_change: int,
    serial: str | None,
    reservation_id: str | None,
    reference: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "warehouse_id": warehouse_id,
        "part_id": part_id,
        "quantity": quantity,
        "on_hand_change": on_hand_change,
        "reserved_change": reserved_change,
        "serial": serial,
        "reservation_id": reservation_id,
        "reference": reference,
        "at": at,
    }


def _add_movements(s: Session, movements: list[dict[str, Any]]) -> list[int]:
    if len(movements) == 1:
        return [s.execute(_sql().insert_movement, movements[0]).scalar_one()]
    return list(
        s.scalars(
            insert(movement_t).returning(movement_t.c.id, sort_by_parameter_order=True), movements
        ).all()
    )


def _made_already(
    tx: Transaction, reservation_id: str, request: Mapping[str, Any]
) -> dict[str, Any]:
    """The reservation a request_id has made already, as the answer to its repeat. A
    command is answered again (its sender waits on reply_to); the event is a repeat
    of a version every subscriber has seen. The same request_id asking for something
    else is refused, as a replayed Idempotency-Key with another body is."""
    resource = reservation_resources(tx.session, [reservation_id])[0]
    differing = sorted(
        name
        for name in REPEATED_REQUEST_FIELDS
        if request.get(name) is not None and request[name] != resource[name]
    )
    if differing:
        raise InvalidInput(
            f"request_id {request['request_id']} made reservation {reservation_id} for "
            f"another request (its {', '.join(differing)} differ)",
            errors={"request_id": ["already used for a different reservation"]},
        )
    if handled_message_id() is not None:
        tx.answer_repeat(
            f"inventory.reservation.{resource['status']}",
            subject=reservation_id,
            data={**resource, "repeat": True},
        )
    return resource


class _PreemptionUndone(Exception):
    """Not enough even with the preempted units: the transaction must roll back
    before the refusal can say what is available and preemptible."""

    def __init__(self, part: Any) -> None:
        super().__init__(part.part_number)
        self.part = part


def _add_history(
    s: Session,
    reservation_id: str,
    status: str,
    at: datetime,
    *,
    note: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    s.execute(
        _sql().insert_history,
        {
            "reservation_id": reservation_id,
            "status": status,
            "at": at,
            "note": note,
            "actor": actor,
        },
    )
    return {"status": status, "at": at, "note": note, "actor": actor}


def _check_replaceable(s: Session, replaced_id: str, data: Mapping[str, Any]) -> None:
    """A replacement names a reservation that exists and was not delivered (a loss
    reported just after the delivery must not take a second unit), of the same part
    for the same job: another job's reservation would tell that job's owners a part is
    on its way when none is."""
    row = s.execute(
        select(Reservation.status, Reservation.job_id, Part.part_number)
        .join(Part, Part.id == Reservation.part_id)
        .where(Reservation.id == replaced_id)
    ).first()
    if row is None:
        raise InvalidInput(
            f"there is no reservation {replaced_id} to replace",
            errors={"replaces": [f"no reservation {replaced_id}"]},
        )
    status, job_id, part_number = row
    if (job_id, part_number) != (data["job_id"], data["part_number"]):
        raise InvalidInput(
            f"reservation {replaced_id} is for {part_number} for job {job_id}: a replacement "
            "is of the same part for the same job",
            errors={"replaces": [f"reservation {replaced_id} is for {part_number}, job {job_id}"]},
        )
    if status == "fulfilled":
        raise Conflict(
            f"reservation {replaced_id} was delivered: there is nothing to replace",
            current_status=status,
        )


def _stock_lines(part_number: str | None, warehouse: str | None) -> Select[Any]:
    return _of_part_at(
        select(Warehouse.code, Part.part_number, Part.reorder_point, Stock.on_hand, Stock.reserved)
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .join(Part, Part.id == Stock.part_id),
        part_number,
        warehouse,
    )


def _of_part_at(query: Select[Any], part_number: str | None, warehouse: str | None) -> Select[Any]:
    """``query`` (joined to Part and Warehouse) narrowed to a part and a warehouse when
    they are named."""
    if part_number:
        query = query.where(Part.part_number == part_number)
    if warehouse:
        query = query.where(Warehouse.code == warehouse)
    return query


def _change_stock(
    s: Session, warehouse_id: int, part_id: int, on_hand: int, reserved: int
) -> StockLevel | None:
    """Apply a change if the result keeps 0 <= reserved <= on_hand; None if it would not."""
    row = s.execute(
        _sql().change_stock,
        {
            "stock_warehouse": warehouse_id,
            "stock_part": part_id,
            "on_hand_change": on_hand,
            "reserved_change": reserved,
        },
    ).first()
    return None if row is None else StockLevel(row.on_hand, row.reserved)


def _shelve_units(
    s: Session, warehouse_id: int, now: datetime, *which: ColumnElement[bool]
) -> CursorResult[Any]:
    """Puts the units ``which`` selects on a warehouse's shelf, free to reserve."""
    return s.execute(
        update(unit_t)
        .where(*which)
        .values(
            warehouse_id=warehouse_id,
            status="available",
            reservation_id=None,
            location=None,
            updated_at=now,
        )
    )


def _add_stock(
    s: Session, warehouse_id: int, part_id: int, quantity: int
) -> tuple[StockLevel, bool]:
    """Receive into a stock row, creating it on first receipt; the level now, and
    whether the row was there before."""
    postgres = s.get_bind().dialect.name == "postgresql"
    statement = (postgresql.insert if postgres else sqlite.insert)(stock_t).values(
        warehouse_id=warehouse_id, part_id=part_id, on_hand=quantity, reserved=0
    )
    statement = statement.on_conflict_do_update(
        index_elements=[stock_t.c.warehouse_id, stock_t.c.part_id],
        set_={"on_hand": stock_t.c.on_hand + quantity},
    )
    if postgres:
        # Said by the upsert itself (a row it inserted has no xmax): two first
        # receipts at once cannot both take the line for new.
        created = literal_column("xmax = 0")
        row = s.execute(statement.returning(stock_t.c.on_hand, stock_t.c.reserved, created)).one()
        return StockLevel(row[0], row[1]), not row[2]
    # SQLite writes take the lock at BEGIN (IMMEDIATE): a look first is as good.
    existed = (
        s.execute(
            select(stock_t.c.part_id).where(
                stock_t.c.warehouse_id == warehouse_id, stock_t.c.part_id == part_id
            )
        ).first()
        is not None
    )
    row = s.execute(statement.returning(stock_t.c.on_hand, stock_t.c.reserved)).one()
    return StockLevel(row[0], row[1]), existed


def _stock_level(s: Session, warehouse_id: int, part_id: int) -> StockLevel:
    row = s.execute(
        select(stock_t.c.on_hand, stock_t.c.reserved).where(
            stock_t.c.warehouse_id == warehouse_id, stock_t.c.part_id == part_id
        )
    ).first()
    return StockLevel(0, 0) if row is None else StockLevel(row.on_hand, row.reserved)


def _explaining_lines(
    kind: str, row: ShipmentIssue, serials: list[str], reference: str, now: datetime
) -> list[dict[str, Any]]:
    """Ledger lines of a shipment's line that change no number: its stock left the books
    on dispatch, and these say where it went (delivered, or written off)."""
    return [
        _movement(
            kind,
            row.warehouse_id,
            row.part_id,
            qty,
            0,
            0,
            serial,
            row.reservation_id,
            reference,
            now,
        )
        for qty, serial in _lines(row.quantity, serials)
    ]


def _lane_history(s: Session, destination_region: str, origin_region: str | None) -> LaneHistory:
    sql = _sql()
    statement, params = sql.lanes_into, {"destination_region": destination_region}
    if origin_region is not None:
        statement, params["origin_region"] = sql.lanes_between, origin_region
    history: dict[rules.LaneKey, list[float]] = {}
    spellings: dict[tuple[str, str | None, str | None], str | None] = {}
    # Newest first: a carrier keeps the spelling of its latest delivery.
    for origin, mode, carrier, hours in s.connection().execute(statement, params):
        spelled = spellings.setdefault((origin, mode, carrier and name_key(carrier)), carrier)
        history.setdefault((origin, mode, spelled), []).append(hours)
    return history


def _announce_stock_change(
    tx: Transaction,
    event: str,
    part: Part,
    warehouse_code: str,
    level: StockLevel,
    change: int | None,
    movement_ids: list[int],
    **details: Any,
) -> dict[str, Any]:
    """Publish ``inventory.stock.<event>`` (and a low-stock crossing, if any); return
    the API's answer: the ledger lines written and the stock row now. ``change`` is
    None when the stock row is new."""
    stock = stock_resource(warehouse_code, part, level)
    tx.publish(
        f"inventory.stock.{event}",
        subject=f"{part.part_number}@{warehouse_code}",
        data={
            "warehouse": warehouse_code,
            "part_number": part.part_number,
            **details,
            "movement_ids": movement_ids,
            "stock": stock,
        },
    )
    before = None if change is None else level.available - change
    _announce_crossing(tx, part, warehouse_code, before, level)
    return {"movement_ids": movement_ids, "stock": stock}


def _announce_crossing(
    tx: Transaction,
    part: Part,
    warehouse_code: str,
    available_before: int | None,
    level: StockLevel,
) -> None:
    crossing = rules.low_stock_crossing(available_before, level.available, part.reorder_point)
    if crossing is not None:
        _announce_low_stock(tx, crossing, part, warehouse_code, level)


def _announce_low_stock(
    tx: Transaction, crossing: str, part: Part, warehouse_code: str, level: StockLevel
) -> None:
    tx.publish(
        f"inventory.stock.{crossing}",
        subject=f"{part.part_number}@{warehouse_code}",
        data=stock_resource(warehouse_code, part, level),
        reply=False,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
