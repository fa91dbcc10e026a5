"""Messages owned by tracking."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields

from shared.schemas import Instant

EVENT_KINDS = (
    "picked_up",
    "checkpoint",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "exception",
    "lost",
)


class TrackingEventData(Schema):
    """``tracking.event.recorded``: an accepted tracking event, placed on its shipment."""

    class Meta:
        unknown = INCLUDE

    id = fields.String(required=True)
    shipment_id = fields.String(required=True)
    kind = fields.String(required=True)
    occurred_at = Instant(required=True)
    checkpoint = fields.String(allow_none=True, load_default=None)
    location = fields.String(allow_none=True, load_default=None)
    note = fields.String(allow_none=True, load_default=None)
    event_id = fields.String(allow_none=True, load_default=None)
    carrier = fields.String(allow_none=True, load_default=None)
    tracking_number = fields.String(allow_none=True, load_default=None)
