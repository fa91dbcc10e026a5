"""Inventory's rules, free of Flask, SQL and the broker."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import name_key

PRIORITIES = ("machine_down", "urgent", "routine")
WAREHOUSE_KINDS = ("central", "depot", "van")
# Until a lane has history, a part in the site's own region is assumed to take a
# day, and one from another region three.
SAME_REGION_HOURS = 24.0
OTHER_REGION_HOURS = 72.0
# A lane's own history counts once it holds this many deliveries (as for tracking's
# ETAs): the first odd ones of a new system must not steer every choice after them.
MIN_LANE_HISTORY = 5

ACTIVE = ("confirmed", "issued")  # statuses that hold stock or units


@dataclass(frozen=True)
class Source:
    """A warehouse that could supply a reservation."""

    warehouse_id: int
    code: str
    region: str
    available: int


@dataclass(frozen=True)
class RankedSource:
    source: Source
    transit_hours: float
    # The lane whose history predicted the transit (None: no lane had enough history,
    # and the default for the region pair applies): the shipment goes that way.
    mode: str | None = None
    carrier: str | None = None

    def estimated_arrival(self, now: datetime) -> datetime:
        return now + timedelta(hours=self.transit_hours)


# A lane into one region, from the origin's side: (origin region, mode, carrier).
LaneKey = tuple[str, str | None, str | None]


def fastest_lane(
    source: Source, destination_region: str, history: Mapping[LaneKey, Sequence[float]]
) -> RankedSource:
    """The source with the lane from its region that arrives first at the median, among
    those with enough history, else with the default for its region pair."""
    known = [
        RankedSource(source, float(statistics.median(hours)), mode, carrier)
        for (origin, mode, carrier), hours in history.items()
        if name_key(origin) == name_key(source.region) and len(hours) >= MIN_LANE_HISTORY
    ]
    if known:
        return min(known, key=lambda r: (r.transit_hours, r.mode or "", r.carrier or ""))
    same = name_key(source.region) == name_key(destination_region)
    return RankedSource(source, SAME_REGION_HOURS if same else OTHER_REGION_HOURS)


def rank_sources(
    sources: Iterable[Source],
    destination_region: str,
    history: Mapping[LaneKey, Sequence[float]],
) -> list[RankedSource]:
    """Earliest predicted arrival first; ties go to the warehouse with most available."""
    ranked = [fastest_lane(source, destination_region, history) for source in sources]
    ranked.sort(key=lambda r: (r.transit_hours, -r.source.available, r.source.code))
    return ranked


def is_low(available: int, reorder_point: int | None) -> bool:
    # At the reorder point is time to reorder: the last units are still there.
    return reorder_point is not None and available <= reorder_point


def low_stock_crossing(
    available_before: int | None, available_after: int, reorder_point: int | None
) -> str | None:
    """``"low"`` when available drops to the reorder point or below, and again at every
    change while it stays there (so the alert tells the level as it is now);
    ``"replenished"`` when it climbs above it; else None. A stock line that did not
    exist before (``available_before`` None) was not low, so its first receipt at or
    below the reorder point is flagged."""
    was_low = available_before is not None and is_low(available_before, reorder_point)
    now_low = is_low(available_after, reorder_point)
    if was_low and now_low:
        return "low" if available_after != available_before else None
    return _crossing(was_low, now_low)


def reorder_point_crossing(
    available: int, reorder_point_before: int | None, reorder_point_after: int | None
) -> str | None:
    """The same signal when the reorder point moves and the stock stays (a line low
    before and after is announced again: its alert names the reorder point)."""
    was_low = is_low(available, reorder_point_before)
    now_low = is_low(available, reorder_point_after)
    if was_low and now_low:
        return "low" if reorder_point_after != reorder_point_before else None
    return _crossing(was_low, now_low)


def _crossing(was_low: bool, now_low: bool) -> str | None:
    if now_low and not was_low:
        return "low"
    if was_low and not now_low:
        return "replenished"
    return None


def preemption_problem(priority: str, preempt: Sequence[str]) -> str | None:
    if preempt and priority != "machine_down":
        return "only a machine_down reservation may preempt others"
    if len(set(preempt)) != len(preempt):
        return "a reservation is named twice in preempt"
    return None
