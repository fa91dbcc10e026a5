"""The shipments API's request and response shapes."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.shipments.states import MODES, STATUSES
from shared.schemas import Code, Instant, JobId, Quantity, Text


class DestinationIn(Schema):
    """A job's site (``site`` and ``region``) or another warehouse (``warehouse``)."""

    site = Text(max_length=200)
    region = Text(max_length=100)
    warehouse = Code()

    @validates_schema
    def _one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("warehouse"):
            if data.get("site"):
                raise ValidationError("give a site or a warehouse, not both", "warehouse")
            return
        missing = [name for name in ("site", "region") if not data.get(name)]
        if missing:
            raise ValidationError("give a site with its region, or a warehouse", missing[0])


class LineIn(Schema):
    part_number = Code(required=True, max_length=64)
    quantity = Quantity(required=True)
    reservation_id = Text(max_length=36)
    serials = fields.List(Text(max_length=100), validate=validate.Length(max=1000))


class ShipmentIn(Schema):
    origin = Code(required=True)
    destination = fields.Nested(DestinationIn, required=True)
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    lines = fields.List(
        fields.Nested(LineIn), required=True, validate=validate.Length(min=1, max=200)
    )
    job_id = JobId()
    required_by = Instant()


class CheckpointIn(Schema):
    name = Text(required=True, max_length=200)
    due_at = Instant(required=True)


class DispatchIn(Schema):
    mode = fields.String(validate=validate.OneOf(MODES))
    carrier = Text(max_length=100)
    tracking_number = Text(max_length=100)
    promised_delivery_at = Instant()
    checkpoints = fields.List(fields.Nested(CheckpointIn), validate=validate.Length(max=200))
    dispatched_at = Instant()


class DeliverIn(Schema):
    delivered_at = Instant()
    received_by = Text(max_length=200)


class CancelIn(Schema):
    reason = Text(required=True, max_length=500)


class ShipmentQuery(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    job_id = Text(max_length=100)
    reservation_id = Text(max_length=36)


class DestinationOut(Schema):
    site = fields.String()
    warehouse = fields.String()
    region = fields.String(allow_none=True)


class LineOut(Schema):
    part_number = fields.String()
    quantity = fields.Integer()
    reservation_id = fields.String(allow_none=True)
    serials = fields.List(fields.String())


class CheckpointOut(Schema):
    name = fields.String()
    due_at = fields.DateTime()
    passed_at = fields.DateTime(allow_none=True)


class HistoryOut(Schema):
    status = fields.String()
    at = fields.DateTime()
    note = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)


class ShipmentOut(Schema):
    id = fields.String()
    status = fields.String()
    origin = fields.String()
    origin_region = fields.String(allow_none=True)
    destination = fields.Nested(DestinationOut)
    mode = fields.String()
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(LineOut))
    job_id = fields.String(allow_none=True)
    priority = fields.String(allow_none=True)
    owner = fields.String(allow_none=True)
    required_by = fields.DateTime(allow_none=True)
    promised_delivery_at = fields.DateTime(allow_none=True)
    dispatched_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    received_by = fields.String(allow_none=True)
    checkpoints = fields.List(fields.Nested(CheckpointOut))
    history = fields.List(fields.Nested(HistoryOut))
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
