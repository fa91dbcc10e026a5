"""Inventory's rules, free of Flask, SQL and the broker."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

PRIORITIES = ("machine_down", "urgent", "routine")
WAREHOUSE_KINDS = ("central", "depot", "van")
# Until a lane has history, a part in the site's own region is assumed to take a
# day, and one from another region three.
SAME_REGION_HOURS = 24.0
OTHER_REGION_HOURS = 72.0

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

    def estimated_arrival(self, now: datetime) -> datetime:
        return now + timedelta(hours=self.transit_hours)


def lane_hours(origin_region: str, destination_region: str, history: Sequence[float]) -> float:
    """Expected transit hours on a lane: the median of what was seen, else a default."""
    if history:
        return float(statistics.median(history))
    return SAME_REGION_HOURS if origin_region == destination_region else OTHER_REGION_HOURS


def rank_sources(
    sources: Iterable[Source],
    destination_region: str,
    history: dict[tuple[str, str], list[float]],
) -> list[RankedSource]:
    """Earliest predicted arrival first; ties go to the warehouse with most available."""
    ranked = [
        RankedSource(
            source,
            lane_hours(
                source.region,
                destination_region,
                history.get((source.region, destination_region), []),
            ),
        )
        for source in sources
    ]
    ranked.sort(key=lambda r: (r.transit_hours, -r.source.available, r.source.code))
    return ranked


def low_stock_crossing(
    available_before: int, available_after: int, reorder_point: int | None
) -> str | None:
    """``"low"`` when available drops below the reorder point, ``"replenished"`` when
    it climbs back to it, else None: one event per crossing, not per change."""
    if reorder_point is None:
        return None
    if available_before >= reorder_point > available_after:
        return "low"
    if available_before < reorder_point <= available_after:
        return "replenished"
    return None


def preemption_problem(priority: str, preempt: Sequence[str]) -> str | None:
    if preempt and priority != "machine_down":
        return "only a machine_down reservation may preempt others"
    if len(set(preempt)) != len(preempt):
        return "a reservation is named twice in preempt"
    return None
