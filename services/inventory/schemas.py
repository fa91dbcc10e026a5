"""The inventory API's request and response shapes. Input schemas refuse unknown
fields, so server-owned fields (``id``, ``status``, ``reserved``...) are never
taken from a body."""

from __future__ import annotations

from collections import Counter

from marshmallow import Schema, fields, validate, validates_schema
from marshmallow.exceptions import ValidationError

from services.inventory.rules import PRIORITIES, WAREHOUSE_KINDS
from shared.schemas import MAX_QUANTITY, Code, Instant, JobId, Quantity, Text, strict_bool

MAX_SERIALS = 10_000


class WarehouseIn(Schema):
    code = Code(required=True)
    name = Text(required=True, max_length=200)
    region = Text(required=True, max_length=100)
    kind = fields.String(required=True, validate=validate.OneOf(WAREHOUSE_KINDS))


class WarehousePatch(Schema):
    name = Text(max_length=200)
    region = Text(max_length=100)
    kind = fields.String(validate=validate.OneOf(WAREHOUSE_KINDS))


class WarehouseOut(Schema):
    code = fields.String()
    name = fields.String()
    region = fields.String()
    kind = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PartIn(Schema):
    part_number = Code(required=True, max_length=64)
    description = Text(required=True, max_length=500)
    serialized = strict_bool(required=True)
    reorder_point = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=MAX_QUANTITY)
    )


class PartPatch(Schema):
    description = Text(max_length=500)
    reorder_point = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=MAX_QUANTITY)
    )


class PartOut(Schema):
    part_number = fields.String()
    description = fields.String()
    serialized = fields.Boolean()
    reorder_point = fields.Integer(allow_none=True)
    created_at = fields.DateTime()


class SerialList(fields.List):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            Text(max_length=100),
            validate=validate.Length(min=1, max=MAX_SERIALS),
            **kwargs,
        )


def _no_repeated_serials(data: dict) -> None:
    counts = Counter(data.get("serials") or [])
    repeated = sorted(serial for serial, count in counts.items() if count > 1)
    if repeated:
        raise ValidationError(f"serials repeated: {', '.join(repeated[:10])}", "serials")


class ReceiptIn(Schema):
    warehouse = Code(required=True)
    part_number = Code(required=True, max_length=64)
    quantity = Quantity(required=True)
    serials = SerialList()
    reference = Text(max_length=500)

    @validates_schema
    def _serials(self, data: dict, **_: object) -> None:
        _no_repeated_serials(data)


class AdjustmentIn(Schema):
    warehouse = Code(required=True)
    part_number = Code(required=True, max_length=64)
    delta = fields.Integer(
        required=True,
        strict=True,
        validate=[
            validate.Range(min=-1_000_000, max=1_000_000),
            validate.NoneOf([0], error="delta must not be 0"),
        ],
    )
    reason = Text(required=True, max_length=500)
    serials = SerialList(
        metadata={
            "description": "For a serialized part, one per unit: required for units added; "
            "for units taken off, without it units no job was promised are taken"
        }
    )

    @validates_schema
    def _serials(self, data: dict, **_: object) -> None:
        _no_repeated_serials(data)


class StockOut(Schema):
    warehouse = fields.String()
    part_number = fields.String()
    on_hand = fields.Integer()
    reserved = fields.Integer()
    available = fields.Integer()
    reorder_point = fields.Integer(allow_none=True)
    low = fields.Boolean()


class ReceiptOut(Schema):
    movement_ids = fields.List(fields.Integer())
    stock = fields.Nested(StockOut)


class AdjustmentOut(ReceiptOut):
    serials = fields.List(
        fields.String(), metadata={"description": "The serial units added or written off"}
    )


class StockQuery(Schema):
    part_number = Code(max_length=64)
    warehouse = Code()


class SiteSchema(Schema):
    name = Text(required=True, max_length=200)
    region = Text(required=True, max_length=100)


class ReservationIn(Schema):
    job_id = JobId(required=True)
    part_number = Code(required=True, max_length=64)
    quantity = Quantity(required=True)
    required_by = Instant(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    owner = Text(required=True, max_length=200)
    site = fields.Nested(SiteSchema, required=True)
    warehouse = Code()
    preempt = fields.List(Text(max_length=36), validate=validate.Length(max=100))
    replaces = Text(
        max_length=36,
        metadata={
            "description": "The reservation this one replaces (one lost or on its way): "
            "of the same part, for the same job, and not delivered"
        },
    )


class ReserveCommand(ReservationIn):
    """The ``inventory.reserve`` command: the POST body plus the sender's request id."""

    request_id = Text(max_length=100)
    # Set by shipments when it reserves the lines of a shipment created by hand.
    shipment_id = Text(max_length=36)


class LocateCommand(Schema):
    """The ``inventory.locate`` command: where else a part could come from for a site,
    asked when the shipment carrying it is in trouble. Its answer is the event
    ``inventory.stock.located``."""

    part_number = Code(required=True, max_length=64)
    quantity = Quantity(required=True)
    site = fields.Nested(SiteSchema, required=True)
    # The shipment in trouble, echoed in the answer.
    shipment_id = Text(max_length=36)


class ReleaseIn(Schema):
    reason = Text(max_length=500)


class ReleaseCommand(ReleaseIn):
    reservation_id = Text(required=True, max_length=36)


class HistoryOut(Schema):
    status = fields.String()
    at = fields.DateTime()
    note = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)


class RouteOut(Schema):
    mode = fields.String()
    carrier = fields.String(allow_none=True)


class ReservationOut(Schema):
    id = fields.String()
    job_id = fields.String()
    part_number = fields.String()
    quantity = fields.Integer()
    warehouse = fields.String()
    warehouse_region = fields.String()
    status = fields.String()
    priority = fields.String()
    required_by = fields.DateTime()
    owner = fields.String()
    site = fields.Nested(SiteSchema)
    serials = fields.List(fields.String())
    replaces = fields.String(allow_none=True)
    preempted_by = fields.String(allow_none=True)
    shipment_id = fields.String(
        allow_none=True,
        metadata={
            "description": "The shipment planned by hand that this reservation was made "
            "for; a shipment planned for it by itself is found with GET "
            "/shipments/api/v1/shipments?reservation_id=<id>"
        },
    )
    request_id = fields.String(allow_none=True)
    route = fields.Nested(RouteOut, allow_none=True)
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    history = fields.List(fields.Nested(HistoryOut))


class ReservationQuery(Schema):
    job_id = Text(max_length=100)
    status = fields.String(
        validate=validate.OneOf(
            ("confirmed", "issued", "fulfilled", "released", "preempted", "lost")
        )
    )
    part_number = Code(max_length=64)


class MovementOut(Schema):
    id = fields.Integer()
    kind = fields.String()
    warehouse = fields.String()
    part_number = fields.String()
    quantity = fields.Integer()
    on_hand_change = fields.Integer()
    reserved_change = fields.Integer()
    serial = fields.String(allow_none=True)
    reservation_id = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    at = fields.DateTime()


class MovementQuery(Schema):
    part_number = Code(max_length=64)
    warehouse = Code()
    since = Instant()


class UnitOut(Schema):
    serial = fields.String()
    part_number = fields.String()
    warehouse = fields.String(allow_none=True)
    status = fields.String()
    reservation_id = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    history = fields.List(fields.Nested(MovementOut))
