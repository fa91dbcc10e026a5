"""Alert rules: which problems a shipment, or a stock row, has at this moment, each
with the one sentence a person reads: who owns it, what is wrong, what the ETA now is.

Pure: the service keeps at most one open alert per (subject, kind), raises the
problems that are new, re-words the ones that changed and resolves the ones gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.tracking.eta import Checkpoint, Estimate, duration, when

KINDS = (
    "at_risk",
    "late",
    "checkpoint_overdue",
    "stalled",
    "exception",
    "lost",
    "delivered_late",
    "low_stock",
)
STATUSES = ("open", "acknowledged", "resolved")
ACTIVE = ("open", "acknowledged")
SEVERITY = {
    "lost": "critical",
    "late": "critical",
    "at_risk": "warning",
    "checkpoint_overdue": "warning",
    "stalled": "warning",
    "exception": "warning",
    "low_stock": "warning",
    "delivered_late": "info",
}
SEVERITY_ORDER = ("critical", "warning", "info")

# A shipment is "stalled" when silent for longer than this share of its typical
# transit, within bounds per mode (carriers scan at hubs; a courier or a person
# carrying a part reports far more often).
SILENCE_SHARE = 0.5
SILENCE_BOUNDS_HOURS = {"carrier": (4.0, 24.0), "courier": (2.0, 8.0), "hand_carry": (2.0, 6.0)}
# Lost: silent this many times the stall limit and past its latest plausible arrival,
# or silent so long that nothing else explains it.
LOST_SILENCE_FACTOR = 2.0
LONG_SILENCE_FACTOR = 4.0
MOVING = ("in_transit", "exception")
# Reservations a replacement may have ended as, no longer on its way to the job.
REPLACEMENT_GONE = {
    "released": "was released",
    "preempted": "was taken for a machine-down job elsewhere",
}
# How many routine reservations or warehouses an alert names before "and N more".
NAMED = 3


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    message: str
    # What the problem is, apart from the ETA: when it changes, the alert is re-worded.
    fingerprint: str


@dataclass(frozen=True)
class Replacement:
    """The rescue of one lost reservation: ``requested``, ``confirmed`` (reserved at
    ``warehouse``), ``rejected`` (``detail``: what inventory had instead, None when it
    had nothing), or ``not_requested`` (a routine job). ``reservation_status``: the
    replacement reservation's own, which may have ended since (released, preempted,
    lost); ``replaced_again``: a replacement lost too is being replaced in turn."""

    part_number: str
    status: str
    warehouse: str | None = None
    eta: datetime | None = None
    shipment_status: str | None = None
    detail: str | None = None
    reservation_status: str | None = None
    replaced_again: bool = False


@dataclass(frozen=True)
class Elsewhere:
    """Where else a part on a shipment in trouble could come from, as inventory
    answered: ``(warehouse, available, estimated arrival)``, the earliest first."""

    part_number: str
    quantity: int
    sources: Sequence[tuple[str, int, datetime]] = ()


@dataclass(frozen=True)
class ShipmentSituation:
    shipment_id: str
    status: str
    mode: str
    estimate: Estimate
    risk: str
    job_id: str | None = None
    owner: str | None = None
    parts: Sequence[str] = ()
    required_by: datetime | None = None
    dispatched_at: datetime | None = None
    dispatch_heard_at: datetime | None = None
    delivered_at: datetime | None = None
    last_scan_at: datetime | None = None
    exception_note: str | None = None
    lost_note: str | None = None
    checkpoints: Sequence[Checkpoint] = ()
    replacements: Sequence[Replacement] = ()
    # Asked of inventory when it got into trouble (held up, or silent too long).
    elsewhere: Sequence[Elsewhere] = ()
    # Where it goes: a site, or a warehouse (a transfer between warehouses).
    destination_site: str | None = None
    destination_warehouse: str | None = None


def severity(kind: str) -> str:
    return SEVERITY.get(kind, "warning")


def stall_after_hours(
    mode: str, typical_hours: float, usual_silence_hours: float | None = None
) -> float:
    """How long a shipment may go without news before it is stalled: what its lane's
    deliveries kept (a lane whose carrier scans nothing on the way allows its whole
    transit), else a share of its typical transit within the mode's bounds."""
    low, high = SILENCE_BOUNDS_HOURS.get(mode, SILENCE_BOUNDS_HOURS["carrier"])
    if usual_silence_hours is not None:
        return max(usual_silence_hours, low)
    return min(max(SILENCE_SHARE * typical_hours, low), high)


def silent_hours(s: ShipmentSituation, now: datetime) -> float | None:
    """Hours since the last scan (or the dispatch, when nothing was scanned since)."""
    moments = [m for m in (s.last_scan_at, s.dispatched_at) if m is not None]
    if not moments:
        return None
    return (now - max(moments)).total_seconds() / 3600


def in_trouble(s: ShipmentSituation, now: datetime) -> bool:
    """Held up by an exception, or silent longer than its lane allows: its owners need
    to know where else its parts could come from."""
    if s.status == "exception":
        return True
    silent = silent_hours(s, now)
    limit = stall_after_hours(s.mode, s.estimate.typical_hours, s.estimate.usual_silence_hours)
    return s.status in MOVING and silent is not None and silent > limit


def trouble_words(s: ShipmentSituation, now: datetime) -> str:
    """What a part's reason adds while its shipment is in trouble: its silence, when
    it has been silent too long, and where else it could come from ("" otherwise)."""
    if not in_trouble(s, now):
        return ""
    silence = ""
    if s.status != "exception":
        since = max(m for m in (s.last_scan_at, s.dispatched_at) if m is not None)
        limit = stall_after_hours(s.mode, s.estimate.typical_hours, s.estimate.usual_silence_hours)
        silence = f"; no scan since {when(since)}, longer than this lane allows ({duration(limit)})"
    return silence + elsewhere_words(s)


def elsewhere_words(s: ShipmentSituation) -> str:
    """Where else its parts could come from and whether in time, as a clause to end a
    sentence with ("" until inventory has answered)."""
    clauses = []
    for e in s.elsewhere:
        if not e.sources:
            clauses.append(f"no other {e.part_number} is in stock in any warehouse")
            continue
        warehouse, available, arrival = e.sources[0]
        more = len(e.sources) - 1
        others = f"; {more} more {'warehouse has' if more == 1 else 'warehouses have'} it" * (
            more > 0
        )
        clauses.append(
            f"another {e.quantity} × {e.part_number} could come from {warehouse} ({available} "
            f"available there{others}) by {when(arrival)}{_against(arrival, s.required_by)}"
        )
    return "".join(f"; {clause}" for clause in clauses)


def _against(arrival: datetime | None, required_by: datetime | None) -> str:
    """Whether an arrival makes the required-by, as a clause ("" when either is unknown)."""
    if arrival is None or required_by is None:
        return ""
    if arrival <= required_by:
        return f", in time for the required-by {when(required_by)}"
    late = duration((arrival - required_by).total_seconds() / 3600)
    return f", {late} after the required-by {when(required_by)}"


def lost_by_silence(s: ShipmentSituation, now: datetime) -> str | None:
    """Why the shipment must be taken for lost, or None while it may still turn up."""
    if s.status not in MOVING:
        return None
    silent = silent_hours(s, now)
    if silent is None:
        return None
    watched = silent
    if s.dispatch_heard_at is not None:
        # A dispatch recorded late: the silence before it was heard of was nobody's
        # to act on, so it is stalled at once but lost only after a wait of its own.
        watched = min(silent, (now - s.dispatch_heard_at).total_seconds() / 3600)
    limit = stall_after_hours(s.mode, s.estimate.typical_hours, s.estimate.usual_silence_hours)
    overdue = s.estimate.overdue_after is not None and now > s.estimate.overdue_after
    if (watched > LOST_SILENCE_FACTOR * limit and overdue) or watched > LONG_SILENCE_FACTOR * limit:
        return (
            f"no scan for {duration(silent)}, far longer than this lane allows ({duration(limit)})"
        )
    return None


def shipment_problems(s: ShipmentSituation, now: datetime) -> list[Problem]:
    who = _who(s)
    what = f"shipment {short_id(s.shipment_id)}{_parts(s.parts)}"
    eta_now = f"ETA now {when(s.estimate.eta)}"
    if s.status == "delivered":
        if s.risk != "delivered_late" or s.required_by is None or s.delivered_at is None:
            return []
        late = duration((s.delivered_at - s.required_by).total_seconds() / 3600)
        return [
            Problem(
                "delivered_late",
                s.shipment_id,
                f"{who}: {what} was delivered on {when(s.delivered_at)}, {late} after its "
                f"required-by {when(s.required_by)}.",
                "delivered_late",
            )
        ]
    if s.status == "lost":
        return _lost(s, who, what)
    if s.status == "cancelled":
        # Its parts still wait for another shipment: the service judges them as not
        # shipped yet and gives their risk here (on_track when none waits).
        return _deadline_problems(s, f"{who}: {what}", cancelled=True)
    if s.status not in ("planned", *MOVING):
        return []
    problems = _deadline_problems(s, f"{who}: {what}")
    if s.status == "planned":
        return problems
    nxt = s.estimate.checkpoint_ahead
    if nxt is not None and nxt.due_at < now:
        overdue = duration((now - nxt.due_at).total_seconds() / 3600)
        position = [c.name for c in s.checkpoints].index(nxt.name) + 1
        problems.append(
            Problem(
                "checkpoint_overdue",
                f"{s.shipment_id}/{nxt.name}",
                f"{who}: checkpoint {nxt.name} ({position} of {len(s.checkpoints)}) of {what} "
                f"was due on {when(nxt.due_at)} and is not passed ({overdue} overdue); "
                f"{eta_now}.",
                f"checkpoint_overdue|{nxt.name}",
            )
        )
    silent = silent_hours(s, now)
    limit = stall_after_hours(s.mode, s.estimate.typical_hours, s.estimate.usual_silence_hours)
    if silent is not None and silent > limit:
        since = max(m for m in (s.last_scan_at, s.dispatched_at) if m is not None)
        elsewhere = elsewhere_words(s)
        problems.append(
            Problem(
                "stalled",
                s.shipment_id,
                f"{who}: no scan of {what} since {when(since)}, longer than this lane "
                f"allows ({duration(limit)}); {eta_now}{elsewhere}.",
                f"stalled|{since.isoformat()}|{elsewhere}",
            )
        )
    if s.status == "exception":
        note = f" ({s.exception_note})" if s.exception_note else ""
        elsewhere = elsewhere_words(s)
        problems.append(
            Problem(
                "exception",
                s.shipment_id,
                f"{who}: the carrier reports an exception on {what}{note}; {eta_now}{elsewhere}.",
                f"exception|{s.exception_note or ''}|{elsewhere}",
            )
        )
    return problems


def _deadline_problems(
    s: ShipmentSituation, subject: str, *, cancelled: bool = False
) -> list[Problem]:
    """``late`` or ``at_risk`` against the required-by, each resolved when its problem
    is gone (a late alert takes over from an at_risk one, and back).
    ``cancelled``: the shipment's parts wait for another; judged as shipped now."""
    if s.required_by is None or s.risk not in ("late", "at_risk"):
        return []
    deadline = when(s.required_by)
    latest = when(s.estimate.latest)
    eta_now = f"ETA now {when(s.estimate.eta)}"
    if cancelled:
        subject = (
            f"{subject} was cancelled and no other shipment carries its parts yet; "
            "shipped now, they"
        )
        expected = f"{subject} would arrive after their required-by {deadline}"
        may_miss = f"{subject} may miss their required-by {deadline}, as they could arrive"
    else:
        expected = f"{subject} is expected after its required-by {deadline}"
        may_miss = f"{subject} may miss its required-by {deadline}, as it could arrive"
    # What the alert says changes when the shipment is cancelled: it is re-worded.
    why = "|cancelled" if cancelled else ""
    if s.risk == "late":
        return [Problem("late", s.shipment_id, f"{expected}; {eta_now}.", f"late{why}")]
    message = f"{may_miss} as late as {latest}; {eta_now}."
    return [Problem("at_risk", s.shipment_id, message, f"at_risk{why}")]


def _lost(s: ShipmentSituation, who: str, what: str) -> list[Problem]:
    if s.replacements and all(r.shipment_status == "delivered" for r in s.replacements):
        return []  # every lost part has been replaced and delivered: the job is whole
    how = f" ({s.lost_note})" if s.lost_note else ""
    if not s.replacements:
        rescue = "it carries no reservation to replace: reserve a replacement by hand"
    else:
        rescue = "; ".join(_replacement_words(r, s.required_by) for r in s.replacements)
    fingerprint = "lost|" + "|".join(
        f"{r.part_number}:{r.status}:{r.warehouse}:{r.shipment_status}:"
        f"{r.reservation_status}:{r.replaced_again}:{r.detail}"
        for r in s.replacements
    )
    return [Problem("lost", s.shipment_id, f"{who}: {what} is lost{how}; {rescue}.", fingerprint)]


def replacement_clause(
    replacements: Sequence[Replacement], part_number: str, required_by: datetime | None
) -> str | None:
    """What the lost alert says of a lost part's replacement (for the job's view,
    where the engineer reads it), as a clause to end the part's reason with."""
    words = [
        _replacement_words(r, required_by) for r in replacements if r.part_number == part_number
    ]
    return "; ".join(words) or None


def _replacement_words(r: Replacement, required_by: datetime | None) -> str:
    if r.status == "requested":
        return (
            f"a replacement {r.part_number} is being reserved from the warehouse that can "
            "deliver first"
        )
    if r.status == "confirmed" and "lost" in (r.shipment_status, r.reservation_status):
        lost_too = f"its replacement {r.part_number} from {r.warehouse} was lost too"
        if r.replaced_again:
            return f"{lost_too}, and another is being found for it (see that shipment's alert)"
        return f"{lost_too}: another must be reserved by hand"
    if r.status == "confirmed" and r.reservation_status in REPLACEMENT_GONE:
        return (
            f"its replacement {r.part_number} reserved at {r.warehouse} "
            f"{REPLACEMENT_GONE[r.reservation_status]}, so none is on its way: another must "
            "be reserved by hand"
        )
    if r.status == "confirmed" and r.shipment_status == "delivered":
        on = f" on {when(r.eta)}" if r.eta is not None else ""
        return f"its replacement {r.part_number} from {r.warehouse} was delivered{on}"
    if r.status == "confirmed":
        return (
            f"a replacement {r.part_number} is reserved at {r.warehouse}, ETA {when(r.eta)}"
            f"{_against(r.eta, required_by)}"
        )
    if r.status == "rejected":
        return r.detail or (
            f"no {r.part_number} is in stock in any warehouse: a unit must be found outside "
            "Partsflow"
        )
    return f"the job is routine: reserve a replacement {r.part_number} by hand if still needed"


def rejection_words(part_number: str, quantity: int, rejection: Mapping) -> str | None:
    """What inventory's refusal of a replacement says exists instead, as a clause of
    the lost alert: units free but spread over warehouses, units held by routine
    reservations a machine-down one may preempt, units reserved for other jobs, or
    another reason. None when no unit of the part is there at all."""
    alternatives = [a for a in rejection.get("alternatives") or [] if isinstance(a, Mapping)]
    preemptible = [p for p in rejection.get("preemptible") or [] if isinstance(p, Mapping)]
    clauses = []
    if alternatives:
        spread = _named(f"{a.get('warehouse')} has {a.get('available')}" for a in alternatives)
        clauses.append(
            f"no warehouse has {quantity} {part_number} free ({spread}): reserve them by hand "
            "from several"
        )
    if preemptible:
        held = sum(int(p.get("quantity", 1)) for p in preemptible)
        jobs = _named(f"job {p.get('job_id')} at {p.get('warehouse')}" for p in preemptible)
        lead = (
            f"{held} more {_are(held)}"
            if alternatives
            else f"no {part_number} is free in any warehouse, but {held} {_are(held)}"
        )
        clauses.append(
            f"{lead} held by routine reservations ({jobs}) that a machine-down reservation "
            "may preempt: reserve one by hand, naming them in preempt"
        )
    held = [h for h in rejection.get("held") or [] if isinstance(h, Mapping)]
    if not clauses and held:
        count = sum(int(h.get("reserved", 1)) for h in held)
        where = _named(f"{h.get('reserved')} at {h.get('warehouse')}" for h in held)
        clauses.append(
            f"no {part_number} is free in any warehouse: {count} {_are(count)} reserved for "
            f"other jobs ({where}); take one from them by hand if this job comes first, or "
            "find a unit outside Partsflow"
        )
    if clauses:
        return "; ".join(clauses)
    if rejection.get("reason") in (None, "not-enough-stock"):
        return None
    detail = str(rejection.get("detail") or rejection.get("reason"))[:300]
    return f"inventory refused the replacement {part_number} ({detail}): reserve one by hand"


def arrival_words(
    part_number: str,
    needed: int,
    warehouse: str,
    available: int,
    at: datetime,
    *,
    arrival: Estimate | None = None,
    required_by: datetime | None = None,
) -> str:
    """The lost alert's clause once a part no warehouse had has come into stock: a
    fact with its time, which stays true when the unit is taken since, and when it
    could arrive had it left then (``arrival``), against the job's required-by."""
    some = f"{available} of the {needed}" if available < needed else f"{available}"
    could = ""
    if arrival is not None and arrival.eta is not None:
        could = f"; leaving then, it could arrive on {when(arrival.eta)}"
        if arrival.latest is not None and arrival.latest > arrival.eta:
            could += f" ({when(arrival.latest)} at the latest)"
        if required_by is not None:
            if arrival.eta <= required_by:
                could += f", in time for the required-by {when(required_by)}"
            else:
                late = duration((arrival.eta - required_by).total_seconds() / 3600)
                could += f", {late} after the required-by {when(required_by)}"
    return (
        f"none was in stock when it was lost, but {some} {part_number} came into stock "
        f"at {warehouse} on {when(at)}{could}: reserve by hand for the job"
    )


def _named(items: Iterable[str]) -> str:
    names = list(items)
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(names[:NAMED]) + more


def _are(count: int) -> str:
    return "is" if count == 1 else "are"


def taken_problem(
    reservation_id: str,
    *,
    job_id: str,
    owner: str | None,
    part_number: str,
    quantity: int,
    warehouse: str,
    required_by: datetime | None,
) -> Problem:
    """A reservation preempted for a machine-down job elsewhere, with nothing reserved
    in its place yet: the job still needs the part, and nothing is on its way. The
    subject is the reservation: no shipment carries it any more."""
    who = f"Job {job_id} (owner {owner})" if owner else f"Job {job_id}"
    deadline = f" by its required-by {when(required_by)}" if required_by else ""
    return Problem(
        "at_risk",
        reservation_id,
        f"{who}: {quantity} {part_number} reserved at {warehouse} was taken for a "
        f"machine-down job elsewhere and nothing replaces it yet; reserve another to have "
        f"it{deadline}.",
        "at_risk|taken",
    )


def low_stock_problem(
    part_number: str, warehouse: str, available: int, reorder_point: int | None
) -> Problem:
    below = (
        f", at or below its reorder point of {reorder_point}" if reorder_point is not None else ""
    )
    return Problem(
        "low_stock",
        f"{part_number}@{warehouse}",
        f"Low stock: {available} {part_number} available at {warehouse}{below}; reorder or "
        "move stock there.",
        "low_stock",
    )


def short_id(identifier: str) -> str:
    return identifier[:8]


def _who(s: ShipmentSituation) -> str:
    if s.job_id and s.owner:
        return f"Job {s.job_id} (owner {s.owner})"
    if s.job_id:
        return f"Job {s.job_id}"
    if s.owner:
        return f"Owner {s.owner}"
    # No job: a transfer only when it goes to a warehouse; a part sent to a site
    # without a job is a shipment like any other.
    if s.destination_warehouse:
        return f"Transfer to {s.destination_warehouse}"
    if s.destination_site:
        return f"Shipment to {s.destination_site}"
    return "Shipment"


def _parts(parts: Sequence[str]) -> str:
    return f" ({', '.join(parts)})" if parts else ""
