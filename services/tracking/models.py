"""Tracking's tables: tracking events, lane history, alerts, the lost-part rescues,
and the read model of jobs, reservations and shipments kept from other services'
events (tracking never reads their databases)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.bus.store import define_bus_tables
from shared.db import NAMING_CONVENTION
from shared.sqltypes import BigId, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


BUS = define_bus_tables(Base.metadata)


class Job(Base):
    """A service job as inventory's and shipments' events describe it."""

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    site_name: Mapped[str | None] = mapped_column(String(200))
    site_region: Mapped[str | None] = mapped_column(String(100))
    required_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    priority: Mapped[str | None] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobReservation(Base):
    """The latest version seen of each of inventory's reservations."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    part_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    warehouse: Mapped[str] = mapped_column(String(32))
    warehouse_region: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    required_by: Mapped[datetime] = mapped_column(UTCDateTime)
    owner: Mapped[str] = mapped_column(String(200))
    site_name: Mapped[str] = mapped_column(String(200))
    site_region: Mapped[str] = mapped_column(String(100))
    replaces: Mapped[str | None] = mapped_column(String(36), index=True)
    shipment_id: Mapped[str | None] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class KnownWarehouse(Base):
    """Inventory's warehouses: where a shipment's lane starts."""

    __tablename__ = "warehouses"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))


class TrackedShipment(Base):
    """A shipment as shipments' events describe it (``version`` refuses stale ones),
    moved on by the tracking events recorded here."""

    __tablename__ = "shipments"
    __table_args__ = (
        Index("ix_shipments_tracking_number", "tracking_number", "carrier"),
        Index("ix_shipments_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(32))
    origin_region: Mapped[str | None] = mapped_column(String(100))
    destination_site: Mapped[str | None] = mapped_column(String(200))
    destination_warehouse: Mapped[str | None] = mapped_column(String(32))
    destination_region: Mapped[str | None] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    carrier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    priority: Mapped[str | None] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(200))
    required_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    promised_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When tracking heard of the dispatch: a dispatch recorded hours late has been
    # silent all that time, but nobody could act on it before.
    dispatch_heard_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The latest tracking event by ``occurred_at`` (events may arrive out of order).
    last_event_id: Mapped[str | None] = mapped_column(String(36))
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why it was taken for lost, when the scheduler did so.
    lost_note: Mapped[str | None] = mapped_column(Text)
    # The ETA last announced by ``tracking.eta.updated``.
    announced_eta: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShipmentLine(Base):
    __tablename__ = "shipment_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), index=True)
    part_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    reservation_id: Mapped[str | None] = mapped_column(String(36), index=True)


class ShipmentCheckpoint(Base):
    """A planned point on the route; ``passed_at`` from a tracking event or from
    shipments, whichever told first."""

    __tablename__ = "checkpoints"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    passed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TrackingEvent(Base):
    """A scan or report about a shipment. ``event_id`` is the sender's id: a repeat of
    it for the same shipment is the same event."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        UniqueConstraint("shipment_id", "event_id", name="uq_tracking_events_sender_id"),
        Index("ix_tracking_events_shipment_time", "shipment_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"))
    kind: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checkpoint: Mapped[str | None] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(1000))
    event_id: Mapped[str | None] = mapped_column(String(200))
    carrier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LaneTransit(Base):
    """A delivered shipment's transit: what ETAs are learned from. The lane is
    (origin region, destination region, mode, carrier or '')."""

    __tablename__ = "lane_transits"
    __table_args__ = (
        Index(
            "ix_lane_transits_lane",
            "origin_region",
            "destination_region",
            "mode",
            "carrier",
            "delivered_at",
        ),
    )

    shipment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    origin_region: Mapped[str] = mapped_column(String(100))
    destination_region: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    carrier: Mapped[str] = mapped_column(String(100))
    hours: Mapped[float]
    promised_hours: Mapped[float | None]
    midway_delay_hours: Mapped[float | None]
    final_delay_hours: Mapped[float | None]
    # The longest time without news between dispatch and delivery: what the lane
    # allows before a shipment on it is stalled.
    longest_silence_hours: Mapped[float | None]
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Alert(Base):
    """Something a person must act on. At most one alert per (subject, kind) is open
    or acknowledged at a time: the partial unique index makes sure of it."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_active_subject_kind",
            "subject",
            "kind",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
            sqlite_where=text("status <> 'resolved'"),
        ),
        Index("ix_alerts_status_raised", "status", "raised_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(300))
    shipment_id: Mapped[str | None] = mapped_column(String(36), index=True)
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(500))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rescue(Base):
    """A replacement asked of inventory for a lost reservation: ``requested`` (the
    reserve command is out), ``confirmed`` or ``rejected`` (its answer), or
    ``not_requested`` (a routine job: people decide)."""

    __tablename__ = "rescues"

    lost_reservation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    shipment_id: Mapped[str | None] = mapped_column(String(36), index=True)
    job_id: Mapped[str] = mapped_column(String(100))
    part_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    replacement_id: Mapped[str | None] = mapped_column(String(36))
    warehouse: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(1000))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Sourcing(Base):
    """Where else a part on a shipment in trouble (held up, or silent too long) could
    come from: asked of inventory (``requested``), then its answer (``answered``), the
    warehouses with the part available, the earliest arrival first."""

    __tablename__ = "sourcings"

    shipment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    part_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # JSON: [{warehouse, available, estimated_arrival}], once answered.
    alternatives: Mapped[str | None] = mapped_column(Text)
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StockSignal(Base):
    """The latest low/replenished signal per part and warehouse, by the time it was
    sent, so that the two arriving out of order leave the right one standing."""

    __tablename__ = "stock_signals"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    low: Mapped[bool]
    signalled_at: Mapped[datetime] = mapped_column(UTCDateTime)
