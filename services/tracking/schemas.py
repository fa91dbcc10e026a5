"""The tracking API's request and response shapes. Input schemas refuse unknown
fields, so server-owned fields (``id``, ``status``...) are never taken from a body."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.tracking.alerts import KINDS, SEVERITY_ORDER, STATUSES
from services.tracking.eta import BASES
from services.tracking.eta import RISKS as RISK_VALUES
from shared.contracts.tracking import EVENT_KINDS
from shared.schemas import Instant, Text


class EventIn(Schema):
    """POST /events, and the ``tracking.record_event`` command."""

    shipment_id = Text(max_length=36)
    carrier = Text(max_length=100)
    tracking_number = Text(max_length=100)
    kind = fields.String(required=True, validate=validate.OneOf(EVENT_KINDS))
    occurred_at = Instant(required=True)
    checkpoint = Text(max_length=200)
    location = Text(max_length=200)
    note = Text(max_length=1000)
    event_id = Text(max_length=200)

    @validates_schema
    def _which_shipment(self, data: dict, **_: object) -> None:
        if data.get("shipment_id"):
            return
        missing = [f for f in ("carrier", "tracking_number") if not data.get(f)]
        if missing:
            message = "give shipment_id, or carrier and tracking_number"
            raise ValidationError({name: [message] for name in ("shipment_id", *missing)})


class EventOut(Schema):
    id = fields.String()
    shipment_id = fields.String()
    kind = fields.String()
    occurred_at = fields.DateTime()
    checkpoint = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    event_id = fields.String(allow_none=True)
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    source = fields.String(allow_none=True)
    recorded_at = fields.DateTime()


class CheckpointOut(Schema):
    name = fields.String()
    due_at = fields.DateTime()
    passed_at = fields.DateTime(allow_none=True)
    overdue = fields.Boolean()
    missed = fields.Boolean(
        metadata={"description": "Not scanned, but a later checkpoint was passed"}
    )
    ahead = fields.Boolean(
        metadata={
            "description": "The first checkpoint ahead of the shipment (after the last one "
            "passed): the one to scan next; none once the journey has ended"
        }
    )


class LastEventOut(Schema):
    kind = fields.String()
    occurred_at = fields.DateTime()
    checkpoint = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


class EtaOut(Schema):
    shipment_id = fields.String()
    status = fields.String()
    eta = fields.DateTime(allow_none=True)
    eta_earliest = fields.DateTime(allow_none=True)
    eta_latest = fields.DateTime(allow_none=True)
    basis = fields.String(metadata={"enum": list(BASES)})
    reason = fields.String()
    required_by = fields.DateTime(allow_none=True)
    risk = fields.String(metadata={"enum": list(RISK_VALUES)})
    next_checkpoint = fields.Nested(CheckpointOut, allow_none=True)
    mode = fields.String()
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    dispatched_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    promised_delivery_at = fields.DateTime(allow_none=True)
    checkpoints = fields.List(fields.Nested(CheckpointOut))
    last_event = fields.Nested(LastEventOut, allow_none=True)


class SiteOut(Schema):
    name = fields.String(allow_none=True)
    region = fields.String(allow_none=True)


class JobPartOut(Schema):
    part_number = fields.String()
    quantity = fields.Integer()
    reservation_id = fields.String(allow_none=True)
    reservation_status = fields.String(allow_none=True)
    warehouse = fields.String(allow_none=True)
    replaces = fields.String(allow_none=True)
    shipment_id = fields.String(allow_none=True)
    shipment_status = fields.String(allow_none=True)
    eta = fields.DateTime(allow_none=True)
    eta_earliest = fields.DateTime(allow_none=True)
    eta_latest = fields.DateTime(allow_none=True)
    basis = fields.String(allow_none=True)
    risk = fields.String()
    reason = fields.String()
    next_checkpoint = fields.Nested(CheckpointOut, allow_none=True)
    checkpoints = fields.List(fields.Nested(CheckpointOut))
    last_event = fields.Nested(LastEventOut, allow_none=True)


class JobOut(Schema):
    job_id = fields.String()
    owner = fields.String(allow_none=True)
    site = fields.Nested(SiteOut)
    required_by = fields.DateTime(allow_none=True)
    priority = fields.String(allow_none=True)
    risk = fields.String(metadata={"enum": list(RISK_VALUES)})
    parts = fields.List(fields.Nested(JobPartOut))


class JobQuery(Schema):
    open = fields.Boolean(load_default=True, metadata={"description": "only jobs still waiting"})
    owner = Text(
        max_length=200,
        metadata={"description": "only the jobs this person holds now (in any case)"},
    )


class AlertOut(Schema):
    id = fields.String()
    kind = fields.String(metadata={"enum": list(KINDS)})
    status = fields.String(metadata={"enum": list(STATUSES)})
    severity = fields.String(metadata={"enum": list(SEVERITY_ORDER)})
    subject = fields.String()
    shipment_id = fields.String(allow_none=True)
    job_id = fields.String(allow_none=True)
    owner = fields.String(allow_none=True)
    message = fields.String()
    raised_at = fields.DateTime()
    resolved_at = fields.DateTime(allow_none=True)
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    updated_at = fields.DateTime()


class AlertQuery(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    kind = fields.String(validate=validate.OneOf(KINDS))
    job_id = Text(max_length=100)
    owner = Text(max_length=200)
    shipment_id = Text(max_length=36)


class AcknowledgeIn(Schema):
    note = Text(max_length=1000)
