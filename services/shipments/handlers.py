"""Shipments' message handlers: reservations to plan, tracking events to follow."""

from __future__ import annotations

from typing import Any

from services.shipments.service import Shipments
from shared.bus.consumer import Route
from shared.contracts.inventory import (
    PartData,
    ReservationData,
    StockShortfallData,
    WarehouseData,
)
from shared.contracts.tracking import TrackingEventData


def plan(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.plan_for_reservation(data, envelope["correlationid"])


def unplan(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.unplan_reservation(data)


def note_reservation(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.note_reservation(data)


def note_warehouse(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.note_warehouse(data)


def note_part(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.note_part(data)


def note_shortfall(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.note_shortfall(data)


def follow_tracking(shipments: Shipments, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    shipments.apply_tracking_event(data)


ROUTES: dict[str, Route] = {
    "inventory.warehouse.created": Route(note_warehouse, WarehouseData),
    "inventory.warehouse.updated": Route(note_warehouse, WarehouseData),
    "inventory.part.created": Route(note_part, PartData),
    "inventory.part.updated": Route(note_part, PartData),
    "inventory.reservation.confirmed": Route(plan, ReservationData),
    "inventory.reservation.released": Route(unplan, ReservationData),
    "inventory.reservation.preempted": Route(unplan, ReservationData),
    "inventory.reservation.issued": Route(note_reservation, ReservationData),
    "inventory.reservation.fulfilled": Route(note_reservation, ReservationData),
    "inventory.reservation.lost": Route(note_reservation, ReservationData),
    "inventory.stock.shortfall": Route(note_shortfall, StockShortfallData),
    "tracking.event.recorded": Route(follow_tracking, TrackingEventData),
}
