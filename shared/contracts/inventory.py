"""Messages owned by inventory."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields

from shared.schemas import Instant


class Site(Schema):
    class Meta:
        unknown = INCLUDE

    name = fields.String(required=True)
    region = fields.String(required=True)


class Route(Schema):
    class Meta:
        unknown = INCLUDE

    mode = fields.String(required=True)
    carrier = fields.String(allow_none=True, load_default=None)


class ReservationData(Schema):
    """``inventory.reservation.{confirmed,released,preempted,issued,fulfilled,lost}``."""

    class Meta:
        unknown = INCLUDE

    id = fields.String(required=True)
    job_id = fields.String(required=True)
    part_number = fields.String(required=True)
    quantity = fields.Integer(required=True)
    warehouse = fields.String(required=True)
    warehouse_region = fields.String(load_default=None)
    status = fields.String(required=True)
    priority = fields.String(required=True)
    required_by = Instant(required=True)
    owner = fields.String(required=True)
    site = fields.Nested(Site, required=True)
    serials = fields.List(fields.String(), load_default=list)
    replaces = fields.String(allow_none=True, load_default=None)
    preempted_by = fields.String(allow_none=True, load_default=None)
    shipment_id = fields.String(allow_none=True, load_default=None)
    # The lane (mode, carrier) that predicted the arrival when the warehouse was chosen.
    route = fields.Nested(Route, allow_none=True, load_default=None)
    version = fields.Integer(required=True)


class ReservationRejectedData(Schema):
    """``inventory.reservation.rejected``: the answer to a reserve command that failed."""

    class Meta:
        unknown = INCLUDE

    command_id = fields.String(required=True)
    request_id = fields.String(allow_none=True, load_default=None)
    job_id = fields.String(load_default=None)
    part_number = fields.String(load_default=None)
    reason = fields.String(load_default=None)
    detail = fields.String(load_default=None)
    alternatives = fields.List(fields.Dict(), load_default=list)


class Alternative(Schema):
    """A warehouse a part could come from, and when it could arrive."""

    class Meta:
        unknown = INCLUDE

    warehouse = fields.String(required=True)
    available = fields.Integer(required=True)
    estimated_arrival = Instant(required=True)


class StockLocatedData(Schema):
    """``inventory.stock.located``: the answer to ``inventory.locate``, the warehouses
    with the part available, the earliest arrival at the site first."""

    class Meta:
        unknown = INCLUDE

    part_number = fields.String(required=True)
    quantity = fields.Integer(required=True)
    shipment_id = fields.String(allow_none=True, load_default=None)
    alternatives = fields.List(fields.Nested(Alternative), load_default=list)


class PartData(Schema):
    """``inventory.part.{created,updated}``."""

    class Meta:
        unknown = INCLUDE

    part_number = fields.String(required=True)
    serialized = fields.Boolean(required=True)


class WarehouseData(Schema):
    """``inventory.warehouse.{created,updated}``."""

    class Meta:
        unknown = INCLUDE

    code = fields.String(required=True)
    name = fields.String(required=True)
    region = fields.String(required=True)
    kind = fields.String(required=True)


class StockData(Schema):
    """``inventory.stock.{low,replenished}``: one stock row."""

    class Meta:
        unknown = INCLUDE

    warehouse = fields.String(required=True)
    part_number = fields.String(required=True)
    on_hand = fields.Integer(required=True)
    reserved = fields.Integer(required=True)
    available = fields.Integer(required=True)
    reorder_point = fields.Integer(allow_none=True, load_default=None)


class StockChangeData(Schema):
    """``inventory.stock.{received,adjusted}``: what changed, and the stock row now."""

    class Meta:
        unknown = INCLUDE

    warehouse = fields.String(required=True)
    part_number = fields.String(required=True)
    stock = fields.Nested(StockData, required=True)


class StockShortfallData(Schema):
    """``inventory.stock.shortfall``: a shipment left with more than its origin had
    available, so inventory issued nothing for that line."""

    class Meta:
        unknown = INCLUDE

    shipment_id = fields.String(required=True)
    warehouse = fields.String(required=True)
    part_number = fields.String(required=True)
    quantity = fields.Integer(required=True)
    available = fields.Integer(required=True)


class ReserveCommandData(Schema):
    """``inventory.reserve``: the POST /reservations body plus ``request_id``. Inventory
    validates it strictly; this is the shape senders build."""

    class Meta:
        unknown = INCLUDE

    request_id = fields.String()
    job_id = fields.String(required=True)
    part_number = fields.String(required=True)
    quantity = fields.Integer(required=True)
    required_by = Instant(required=True)
    priority = fields.String(required=True)
    owner = fields.String(required=True)
    site = fields.Nested(Site, required=True)
    warehouse = fields.String()
    replaces = fields.String()
