"""A shipment's statuses and the actions that move it: a small explicit state machine."""

from __future__ import annotations

from shared.errors import Conflict

PLANNED = "planned"
IN_TRANSIT = "in_transit"
EXCEPTION = "exception"
DELIVERED = "delivered"
LOST = "lost"
CANCELLED = "cancelled"

STATUSES = (PLANNED, IN_TRANSIT, EXCEPTION, DELIVERED, LOST, CANCELLED)
MODES = ("carrier", "courier", "hand_carry")

# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "dispatch": ((PLANNED,), IN_TRANSIT),
    "deliver": ((IN_TRANSIT, EXCEPTION), DELIVERED),
    "cancel": ((PLANNED,), CANCELLED),
    "report_exception": ((IN_TRANSIT,), EXCEPTION),
    "resume": ((EXCEPTION,), IN_TRANSIT),
    "lose": ((IN_TRANSIT, EXCEPTION), LOST),
}

# Tracking's scans: those that say the shipment moves on, and those that, naming a
# checkpoint, pass it (as tracking counts them).
MOVEMENT_KINDS = ("picked_up", "checkpoint", "in_transit", "out_for_delivery")
PASSING_KINDS = (*MOVEMENT_KINDS, "delivered")
# The event announcing each move a scan can make.
ANNOUNCED = {"report_exception": "exception", "lose": "lost", "resume": "resumed"}


class WrongStatus(Conflict):
    title = "Wrong status for this action"
    type_slug = "wrong-status"


def can(action: str, status: str) -> bool:
    return status in TRANSITIONS[action][0]


def next_status(action: str, status: str, shipment_id: str = "") -> str:
    """The status ``action`` leads to from ``status``; raises :class:`WrongStatus`."""
    allowed, target = TRANSITIONS[action]
    if status not in allowed:
        verb = action.replace("_", " ")
        raise WrongStatus(
            f"shipment {shipment_id} is {status}; it can {verb} only when "
            f"{' or '.join(allowed)}".replace("  ", " "),
            current_status=status,
        )
    return target


def action_for_scan(kind: str) -> str | None:
    """The action a scan of ``kind`` asks of a shipment, if any (a delivery is its
    own command)."""
    if kind == "exception":
        return "report_exception"
    if kind == "lost":
        return "lose"
    if kind in MOVEMENT_KINDS:
        return "resume"
    return None
