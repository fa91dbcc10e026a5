"""Shipments' tables: shipments, their lines, checkpoints and status history, and the
read models shipments keeps of inventory's warehouses and reservations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.bus.store import define_bus_tables
from shared.db import NAMING_CONVENTION
from shared.sqltypes import BigId, UTCDateTime

OPEN_STATUSES = ("in_transit", "exception")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


BUS = define_bus_tables(Base.metadata)


class Shipment(Base):
    __tablename__ = "shipments"
    __table_args__ = (
        # Carriers post events by (carrier, tracking number): unique among open shipments.
        Index(
            "uq_shipments_open_tracking",
            "carrier",
            "tracking_number",
            unique=True,
            postgresql_where=text("status IN ('in_transit', 'exception')"),
            sqlite_where=text("status IN ('in_transit', 'exception')"),
        ),
        Index("ix_shipments_job_origin_status", "job_id", "origin", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    origin: Mapped[str] = mapped_column(String(32))
    origin_region: Mapped[str | None] = mapped_column(String(100))
    destination_site: Mapped[str | None] = mapped_column(String(200))
    destination_warehouse: Mapped[str | None] = mapped_column(String(32))
    destination_region: Mapped[str | None] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    carrier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    job_id: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[str | None] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(200))
    required_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    promised_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_by: Mapped[str | None] = mapped_column(String(200))
    # When the latest scan heard of it happened: a report older than that is stale.
    latest_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The first scan on its way heard before its dispatch was recorded: a dispatch
    # inferred from its delivery starts there.
    first_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShipmentLine(Base):
    """A part on a shipment. A line with a reservation ships the units it holds; a line
    without one (a transfer made by hand) ships what the origin has available."""

    __tablename__ = "shipment_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), index=True)
    part_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    reservation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    serials: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str | None] = mapped_column(String(500))


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    passed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EarlyCheckpointScan(Base):
    """The earliest scan at a named place heard while the shipment was still planned:
    the dispatch, recorded later, may name that place as a checkpoint already passed."""

    __tablename__ = "early_checkpoint_scans"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class EarlyReport(Base):
    """The latest exception or loss reported while the shipment was still planned, and
    not followed by a scan that said it moved on: the dispatch, recorded later, takes
    it up."""

    __tablename__ = "early_reports"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), primary_key=True)
    # The move it asks for: report_exception or lose.
    action: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)


class ShipmentEvent(Base):
    """A shipment's history: every status it went through, when, why, by whom."""

    __tablename__ = "shipment_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))


class KnownWarehouse(Base):
    """Inventory's warehouses, as its events announced them."""

    __tablename__ = "known_warehouses"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100))


class KnownPart(Base):
    """Inventory's parts, as its events announced them (``serialized`` unknown for
    parts learnt only from reservations and shipments made before parts were noted)."""

    __tablename__ = "known_parts"

    part_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    serialized: Mapped[bool | None] = mapped_column(Boolean)


class KnownReservation(Base):
    """The latest version seen of each reservation, so stale events are refused."""

    __tablename__ = "known_reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str] = mapped_column(String(100))
    part_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    warehouse: Mapped[str] = mapped_column(String(32))
    # Where its part must go, and the units it holds (comma-separated); None for a
    # reservation noted before these were kept and never planned.
    site_name: Mapped[str | None] = mapped_column(String(200))
    site_region: Mapped[str | None] = mapped_column(String(100))
    serials: Mapped[str | None] = mapped_column(Text)
