"""Messages owned by shipments: ``shipments.shipment.{planned,dispatched,delivered,
exception,lost,cancelled}`` all carry the shipment as the API shows it."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields

from shared.schemas import Instant


class Destination(Schema):
    """A job's site (``site`` and ``region``) or a warehouse (``warehouse`` and its
    ``region``)."""

    class Meta:
        unknown = INCLUDE

    site = fields.String(load_default=None)
    warehouse = fields.String(load_default=None)
    region = fields.String(load_default=None)


class Line(Schema):
    class Meta:
        unknown = INCLUDE

    part_number = fields.String(required=True)
    quantity = fields.Integer(required=True)
    reservation_id = fields.String(allow_none=True, load_default=None)
    serials = fields.List(fields.String(), load_default=list)


class Checkpoint(Schema):
    class Meta:
        unknown = INCLUDE

    name = fields.String(required=True)
    due_at = Instant(required=True)
    passed_at = Instant(allow_none=True, load_default=None)


class ShipmentData(Schema):
    class Meta:
        unknown = INCLUDE

    id = fields.String(required=True)
    status = fields.String(required=True)
    origin = fields.String(required=True)
    origin_region = fields.String(allow_none=True, load_default=None)
    destination = fields.Nested(Destination, required=True)
    mode = fields.String(required=True)
    carrier = fields.String(allow_none=True, load_default=None)
    tracking_number = fields.String(allow_none=True, load_default=None)
    lines = fields.List(fields.Nested(Line), required=True)
    job_id = fields.String(allow_none=True, load_default=None)
    priority = fields.String(allow_none=True, load_default=None)
    owner = fields.String(allow_none=True, load_default=None)
    required_by = Instant(allow_none=True, load_default=None)
    promised_delivery_at = Instant(allow_none=True, load_default=None)
    dispatched_at = Instant(allow_none=True, load_default=None)
    delivered_at = Instant(allow_none=True, load_default=None)
    checkpoints = fields.List(fields.Nested(Checkpoint), load_default=list)
    version = fields.Integer(required=True)
