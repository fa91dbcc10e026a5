"""Inventory's tables: warehouses, parts, stock, serial units, reservations, the ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.bus.store import define_bus_tables
from shared.db import NAMING_CONVENTION
from shared.sqltypes import BigId, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


BUS = define_bus_tables(Base.metadata)


class Warehouse(Base):
    __tablename__ = "warehouses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Part(Base):
    __tablename__ = "parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    part_number: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500))
    serialized: Mapped[bool] = mapped_column(Boolean)
    reorder_point: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Stock(Base):
    """Per part and warehouse. Changed only by conditional UPDATEs, each with a
    movement row, so the database itself refuses an oversell."""

    __tablename__ = "stock"
    __table_args__ = (
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("on_hand >= reserved", name="on_hand_covers_reserved"),
    )

    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"), primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)


class Unit(Base):
    """One serialized unit. ``status``: available, reserved, in_transit, at_site,
    written_off. ``warehouse_id`` is where it is (or left from, while in transit)."""

    __tablename__ = "units"
    __table_args__ = (Index("ix_units_pick", "part_id", "warehouse_id", "status"),)

    serial: Mapped[str] = mapped_column(String(100), primary_key=True)
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    warehouse_id: Mapped[int | None] = mapped_column(ForeignKey("warehouses.id"))
    status: Mapped[str] = mapped_column(String(16))
    reservation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    location: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_part_status", "part_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    required_by: Mapped[datetime] = mapped_column(UTCDateTime)
    owner: Mapped[str] = mapped_column(String(200))
    site_name: Mapped[str] = mapped_column(String(200))
    site_region: Mapped[str] = mapped_column(String(100))
    replaces: Mapped[str | None] = mapped_column(String(36))
    preempted_by: Mapped[str | None] = mapped_column(String(36))
    shipment_id: Mapped[str | None] = mapped_column(String(36))
    request_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    # The lane (mode and carrier) whose history predicted the part's arrival when the
    # warehouse was chosen; None when no lane had enough history.
    route_mode: Mapped[str | None] = mapped_column(String(16))
    route_carrier: Mapped[str | None] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReservationUnit(Base):
    """The serial units a reservation holds (it holds them until released)."""

    __tablename__ = "reservation_units"

    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"), primary_key=True)
    serial: Mapped[str] = mapped_column(ForeignKey("units.serial"), primary_key=True)


class ReservationEvent(Base):
    """A reservation's history: every status it went through, who and why."""

    __tablename__ = "reservation_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Movement(Base):
    """One ledger line. ``on_hand_change`` and ``reserved_change`` are the signed
    effects on the stock row: ``on_hand`` and ``reserved`` are their sums."""

    __tablename__ = "movements"
    __table_args__ = (Index("ix_movements_stock", "part_id", "warehouse_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    on_hand_change: Mapped[int] = mapped_column(Integer)
    reserved_change: Mapped[int] = mapped_column(Integer)
    serial: Mapped[str | None] = mapped_column(String(100), index=True)
    reservation_id: Mapped[str | None] = mapped_column(String(36))
    reference: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LaneTransit(Base):
    """Transit times seen on delivered shipments, by lane (region pair, mode and
    carrier): how inventory picks the warehouse whose part arrives first."""

    __tablename__ = "lane_transits"
    __table_args__ = (Index("ix_lane_transits_lane", "origin_region", "destination_region"),)

    shipment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    origin_region: Mapped[str] = mapped_column(String(100))
    destination_region: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str | None] = mapped_column(String(16))
    carrier: Mapped[str | None] = mapped_column(String(100))
    hours: Mapped[float]
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShipmentIssue(Base):
    """What inventory let go on each line of a dispatched shipment, and how that ended
    (``settled``: ``fulfilled`` or ``lost``). Its presence makes a repeated or late
    dispatch event change nothing."""

    __tablename__ = "shipment_issues"

    shipment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    serials: Mapped[str] = mapped_column(Text, default="")
    reservation_id: Mapped[str | None] = mapped_column(String(36))
    settled: Mapped[str | None] = mapped_column(String(16))
