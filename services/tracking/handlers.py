"""Tracking's message handlers: the record-event command, and the events of inventory
and shipments that build its read model. Each calls one use case; the routes'
schemas have parsed ``data`` already. The scheduler is a periodic job."""

from __future__ import annotations

from typing import Any

from services.tracking.schemas import EventIn
from services.tracking.service import Tracking
from shared.bus.consumer import Route
from shared.bus.context import NewsOnItsWay, can_wait_for_news
from shared.bus.topology import COMMAND
from shared.config import Settings
from shared.contracts.inventory import (
    ReservationData,
    ReservationRejectedData,
    StockChangeData,
    StockData,
    StockLocatedData,
    WarehouseData,
)
from shared.contracts.shipments import ShipmentData
from shared.errors import DomainError, NotFound
from shared.worker import PeriodicJob


def record_event(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    """``tracking.record_event``: the answer is ``tracking.event.recorded`` or
    ``tracking.event.rejected`` (an unknown shipment). A shipment not heard of yet may
    be on its way on the events queue: the command waits a moment for it."""
    try:
        tracking.record_event(data, source=envelope.get("source"), answer_repeat=True)
    except NotFound as error:
        if can_wait_for_news():
            raise NewsOnItsWay() from error
        tracking.reject_command("tracking.event.rejected", envelope, error, request=data)
    except DomainError as error:
        tracking.reject_command("tracking.event.rejected", envelope, error, request=data)


def shipment_changed(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_shipment(data, envelope["type"])


def reservation_changed(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_reservation(data)


def reservation_rejected(
    tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]
) -> None:
    tracking.reservation_rejected(data, envelope)


def warehouse_changed(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_warehouse(data)


def stock_arrived(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_stock_arrival(data["stock"])


def stock_low(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_stock_signal(data, envelope, low=True)


def stock_replenished(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_stock_signal(data, envelope, low=False)


def stock_located(tracking: Tracking, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    tracking.apply_located(data)


def periodic_jobs(tracking: Tracking, settings: Settings) -> list[PeriodicJob]:
    """The alert scheduler: judge every open shipment every few seconds."""
    return [
        PeriodicJob(
            "scan", settings.tracking_scan_seconds, lambda pause: tracking.scan(pause=pause)
        )
    ]


SHIPMENT_EVENTS = (
    "planned",
    "updated",
    "dispatched",
    "delivered",
    "exception",
    "resumed",
    "lost",
    "cancelled",
)
RESERVATION_EVENTS = ("confirmed", "released", "preempted", "issued", "fulfilled", "lost")

ROUTES: dict[str, Route] = {
    "tracking.record_event": Route(
        record_event, EventIn, kind=COMMAND, rejected="tracking.event.rejected"
    ),
    **{
        f"shipments.shipment.{name}": Route(shipment_changed, ShipmentData)
        for name in SHIPMENT_EVENTS
    },
    **{
        f"inventory.reservation.{name}": Route(reservation_changed, ReservationData)
        for name in RESERVATION_EVENTS
    },
    "inventory.reservation.rejected": Route(reservation_rejected, ReservationRejectedData),
    "inventory.warehouse.created": Route(warehouse_changed, WarehouseData),
    "inventory.warehouse.updated": Route(warehouse_changed, WarehouseData),
    "inventory.stock.received": Route(stock_arrived, StockChangeData),
    "inventory.stock.adjusted": Route(stock_arrived, StockChangeData),
    "inventory.stock.low": Route(stock_low, StockData),
    "inventory.stock.replenished": Route(stock_replenished, StockData),
    "inventory.stock.located": Route(stock_located, StockLocatedData),
}
