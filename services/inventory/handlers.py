"""Inventory's message handlers: commands from other systems, events from shipments.

Each handler parses nothing itself (the route's schema did) and calls one use case.
"""

from __future__ import annotations

from typing import Any

from services.inventory.schemas import LocateCommand, ReleaseCommand, ReserveCommand
from services.inventory.service import Inventory
from shared.bus.consumer import Route
from shared.bus.topology import COMMAND
from shared.contracts.shipments import ShipmentData
from shared.errors import DomainError


def reserve(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    """``inventory.reserve``: the answer is ``.confirmed`` or ``.rejected``."""
    data.setdefault("request_id", envelope["id"])
    try:
        inventory.reserve_part(data, actor=envelope.get("source"))
    except DomainError as error:
        inventory.reject_command("inventory.reservation.rejected", envelope, error, request=data)


def release(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    """``inventory.release``: the answer is ``.released`` or ``inventory.release.rejected``."""
    try:
        inventory.release_reservation(
            data["reservation_id"], data.get("reason"), actor=envelope.get("source")
        )
    except DomainError as error:
        inventory.reject_command("inventory.release.rejected", envelope, error, request=data)


def locate(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    """``inventory.locate``: the answer is ``inventory.stock.located``, or
    ``inventory.locate.rejected`` for a part nobody knows."""
    try:
        inventory.locate_part(data)
    except DomainError as error:
        inventory.reject_command("inventory.locate.rejected", envelope, error, request=data)


def issue(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    inventory.issue_for_shipment(data)


def delivered(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    inventory.settle_delivered_shipment(data)


def lost(inventory: Inventory, data: dict[str, Any], envelope: dict[str, Any]) -> None:
    inventory.settle_lost_shipment(data)


ROUTES: dict[str, Route] = {
    "inventory.reserve": Route(
        reserve, ReserveCommand, kind=COMMAND, rejected="inventory.reservation.rejected"
    ),
    "inventory.release": Route(
        release, ReleaseCommand, kind=COMMAND, rejected="inventory.release.rejected"
    ),
    "inventory.locate": Route(
        locate, LocateCommand, kind=COMMAND, rejected="inventory.locate.rejected"
    ),
    "shipments.shipment.dispatched": Route(issue, ShipmentData),
    "shipments.shipment.delivered": Route(delivered, ShipmentData),
    "shipments.shipment.lost": Route(lost, ShipmentData),
}
