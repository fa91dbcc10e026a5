"""The ETA model: when a shipment should arrive, an 80 % range around it, where the
estimate comes from, and why, in one sentence a person reads.

Pure functions over plain values: no Flask, SQL or broker.

Transit times are modelled as log-normal: always positive, skewed towards delays,
described by a median and a spread (the standard deviation of their logarithm). The
median comes from the lane's history when it has enough, else from the promised
delivery time, else from a per-mode default with a wide spread. A lane with a long
history speaks for itself: its own transits, whatever their shape (two humps when a
pass closes, a long tail of strikes), not a log-normal fitted to them. What is known at
the moment of reading narrows it: time that has passed without a delivery (the
distribution given "not arrived yet"), and the checkpoints passed or overdue so far.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from statistics import NormalDist

MODES = ("carrier", "courier", "hand_carry")
BASES = ("promised", "lane_history", "checkpoints", "default")

# A lane needs this many delivered shipments before its history is trusted alone.
MIN_LANE_HISTORY = 5
# From this many, the lane's transits themselves are the model. Of n transits, the next
# one falls below the k-th shortest with probability k / (n + 1), whatever their shape.
SHAPE_HISTORY = 30
# A 90 % point needs this many transits beyond it (0.9 x (9 + 1) = 9); past the last
# few, the model says what they said was still ahead of them, and more the later it is.
TAIL_TRANSITS = 9
# A lane changes with time (a new depot, winter roads): the next transit comes from a
# lane a little unlike its past, so its range reaches a little past the past's own 10 %
# and 90 % points (to their 9 % and 91 %).
SHAPE_WIDENING = 1.025
# Without history: a typical transit per mode, and a spread that makes the 80 % range
# about half to twice that (never falsely narrow).
DEFAULT_HOURS = {"carrier": 48.0, "courier": 12.0, "hand_carry": 24.0}
DEFAULT_SPREAD = 0.55
# Within one region a journey is shorter, across regions longer (inventory ranks its
# warehouses by the same rule: a carrier takes a day within a region, three across).
REGION_FACTOR = {True: 0.5, False: 1.5, None: 1.0}
# How far actual arrivals stray from a promise, when no history says better.
PROMISE_SPREAD = {"carrier": 0.3, "courier": 0.25, "hand_carry": 0.2}
# Even a very regular lane is not clockwork.
MIN_SPREAD = 0.05
# A lane of a few wildly different transits (a test shipment delivered in a minute
# beside a real one) must not make a range of centuries: beyond this spread the 80 %
# range is already about 1/13 to 13 times the median.
MAX_SPREAD = 2.0
# A delivered transit shorter than this share of its lane's median is not counted.
RECORDING_SHARE = 0.1
# No estimate reaches further than this from dispatch.
MAX_TRANSIT_HOURS = 24.0 * 365
# Real lanes have heavier tails than a log-normal (a strike, a storm): a little margin
# keeps the 80 % range from being falsely narrow on them.
MARGIN = 1.06
# The 10 % and 90 % points of a normal distribution are this many deviations out.
Z80 = NormalDist().inv_cdf(0.9)
# An exception (damaged, held at customs) typically costs part of a transit.
EXCEPTION_DELAY_SHARE = 0.25
EXCEPTION_EXTRA_SHARE = 1.0
# What part of a delay seen at a checkpoint is still there at arrival, when the lane
# has no history of checkpoint delays, and how sure that is.
DEFAULT_PERSISTENCE = 1.0
DEFAULT_PERSISTENCE_DOUBT = 0.35
# Delayed shipments with checkpoints a lane needs before it says how delays carry on.
MIN_CARRY_PAIRS = 5
# The most recent ones are enough (the slopes between them grow with the square).
MAX_CARRY_PAIRS = 200
# A checkpoint delay smaller than this says nothing about how delays carry on.
NOTICEABLE_DELAY_HOURS = 0.25
# The least width on either side of a checkpoint-based estimate.
FLOOR_HOURS = 0.25
# An out-for-delivery scan puts a shipment on its last round, which ends the same day:
# it arrives about 3 h after the scan, within 10 h in 9 cases of 10, and seldom in the
# first half hour (the 10 %, 50 % and 90 % points, in hours after the scan).
OUT_FOR_DELIVERY_HOURS = {0.1: 0.5, 0.5: 3.0, 0.9: 10.0}


@dataclass(frozen=True)
class Transit:
    """One delivered shipment on a lane: what it took, and what it was promised.

    ``midway_delay_hours`` / ``final_delay_hours``: how late it was at a checkpoint part
    of the way, and at arrival against its plan; pairs of them say whether delays on
    this lane carry on to the end or are made up on the way.
    """

    hours: float
    promised_hours: float | None = None
    midway_delay_hours: float | None = None
    final_delay_hours: float | None = None
    longest_silence_hours: float | None = None


@dataclass(frozen=True)
class DelayCarry:
    """How the delay seen part-way turns into the delay at arrival on a lane:
    ``final = persistence x midway + added``, give or take what the rest of the
    journey adds beyond that (``low_hours``..``high_hours``, its 10 % and 90 % points)."""

    persistence: float
    added_hours: float
    low_hours: float
    high_hours: float
    count: int


@dataclass(frozen=True)
class LaneStats:
    """What a lane's history says about its next shipment."""

    count: int = 0
    median_hours: float | None = None
    spread: float = DEFAULT_SPREAD
    promise_count: int = 0
    promise_ratio: float = 1.0
    promise_spread: float = DEFAULT_SPREAD
    carry: DelayCarry | None = None
    # How long a shipment on this lane may go without news and still be as usual (None:
    # too few deliveries say).
    usual_silence_hours: float | None = None
    # The transits, and their shares of the promised time, shortest first, once there
    # are enough of them to be the model (SHAPE_HISTORY); empty before.
    shape_hours: tuple[float, ...] = ()
    shape_promise_ratios: tuple[float, ...] = ()


def lane_stats(transits: Sequence[Transit]) -> LaneStats:
    hours = [t.hours for t in transits if t.hours > 0]
    if not hours:
        return LaneStats()
    if len(hours) >= MIN_LANE_HISTORY:
        # A transit of a small share of the lane's usual one is a recording (a
        # delivery entered with its dispatch), not a journey: one in twenty made the
        # range several times wider than all the others needed.
        shortest = statistics.median(hours) * RECORDING_SHARE
        transits = [t for t in transits if t.hours >= shortest]
        hours = [t.hours for t in transits]
    ratios = [
        t.hours / t.promised_hours
        for t in transits
        if t.hours > 0 and t.promised_hours is not None and t.promised_hours > 0
    ]
    pairs = [
        (t.midway_delay_hours, t.final_delay_hours)
        for t in transits
        if t.midway_delay_hours is not None and t.final_delay_hours is not None
    ]
    return LaneStats(
        count=len(hours),
        median_hours=float(statistics.median(hours)),
        spread=_predictive_spread(hours),
        promise_count=len(ratios),
        promise_ratio=float(statistics.median(ratios)) if ratios else 1.0,
        promise_spread=_predictive_spread(ratios) if ratios else DEFAULT_SPREAD,
        carry=_delay_carry(pairs) if len(pairs) >= MIN_CARRY_PAIRS else None,
        usual_silence_hours=_usual_silence(
            [t.longest_silence_hours for t in transits if t.longest_silence_hours is not None]
        ),
        shape_hours=_shape(hours),
        shape_promise_ratios=_shape(ratios),
    )


def _shape(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(sorted(values)) if len(values) >= SHAPE_HISTORY else ()


def _usual_silence(silences: Sequence[float]) -> float | None:
    """The longest silence the next shipment may keep as usual: the 90 % point of
    the delivered ones' longest, widened as a prediction from few is."""
    if len(silences) < MIN_LANE_HISTORY:
        return None
    high = statistics.quantiles(silences, n=10, method="inclusive")[-1]
    return high * _widening(len(silences))


def longest_silence_hours(
    dispatched_at: datetime, delivered_at: datetime, news: Sequence[datetime]
) -> float:
    """The longest stretch without news between a dispatch and its delivery."""
    moments = sorted(
        [dispatched_at, delivered_at, *(m for m in news if dispatched_at < m < delivered_at)]
    )
    return max(_hours(later - earlier) for earlier, later in pairwise(moments))


def _delay_carry(pairs: Sequence[tuple[float, float]]) -> DelayCarry:
    """The slope of the final delay on the midway one, and what the rest of a journey
    adds beyond it. Robust (Theil-Sen: the median of the slopes between pairs, then the
    median of what is left): a rare long hold-up widens the range but does not tilt
    the slope or move every estimate later."""
    pairs = pairs[:MAX_CARRY_PAIRS]
    n = len(pairs)
    slopes = [
        (f2 - f1) / (m2 - m1)
        for i, (m1, f1) in enumerate(pairs)
        for m2, f2 in pairs[i + 1 :]
        if abs(m2 - m1) >= NOTICEABLE_DELAY_HOURS
    ]
    persistence = DEFAULT_PERSISTENCE
    if len(slopes) >= MIN_CARRY_PAIRS:
        persistence = min(max(statistics.median(slopes), 0.0), 1.5)
    added = statistics.median(f - persistence * m for m, f in pairs)
    residuals = [f - added - persistence * m for m, f in pairs]
    low, *_, high = statistics.quantiles(residuals, n=10, method="inclusive")
    widen = _widening(n)
    return DelayCarry(persistence, added, min(low, 0.0) * widen, max(high, 0.0) * widen, n)


def _predictive_spread(values: Sequence[float]) -> float:
    """The log-spread of the *next* value, not of the sample: wider for few values
    (the sample's own spread is uncertain, and so is its median)."""
    n = len(values)
    if n < 2:
        return DEFAULT_SPREAD
    logs = [math.log(v) for v in values]
    # A sample's deviation underestimates the spread it comes from (by c4, ~6 % at 5).
    unbiased = statistics.stdev(logs) / (1 - 1 / (4 * n) - 7 / (32 * n * n))
    spread = max(unbiased, MIN_SPREAD)
    return min(spread * _widening(n), MAX_SPREAD)


def _widening(n: int) -> float:
    """From a sample's spread to the next value's: sqrt(1 + 1/n) as its centre is
    estimated too; then Student's t at the 90 % point over the normal's, for n - 1
    degrees of freedom (Cornish-Fisher, second order); and the margin for tails."""
    dof = n - 1
    return MARGIN * math.sqrt(1 + 1 / n) * (1 + 0.661 / dof + 0.446 / dof**2)


@dataclass(frozen=True)
class TransitModel:
    """A log-normal transit time, in hours from dispatch; or, with ``mixture``, a blend
    of log-normals ``(weight, median_hours, spread)``, whose median and upper spread
    ``median_hours`` and ``spread`` then give; or, with ``observed``, the transits a
    lane has seen (shortest first), which ``median_hours`` and ``spread`` summarise."""

    median_hours: float
    spread: float
    mixture: tuple[tuple[float, float, float], ...] = ()
    observed: tuple[float, ...] = ()

    @classmethod
    def of_transits(cls, observed: Sequence[float], spread: float) -> TransitModel:
        return cls(float(statistics.median(observed)), spread, observed=tuple(observed))

    @classmethod
    def blend(cls, seen: TransitModel, assumed: TransitModel, weight: float) -> TransitModel:
        """Drawn from ``seen`` with probability ``weight``, else from ``assumed``."""
        parts = (
            (weight, seen.median_hours, seen.spread),
            (1 - weight, assumed.median_hours, assumed.spread),
        )
        mixed = cls(seen.median_hours, seen.spread, parts)
        median, high = mixed.quantile(0.5), mixed.quantile(0.9)
        spread = min(max(math.log(high / median) / Z80, MIN_SPREAD), MAX_SPREAD)
        return cls(median, spread, parts)

    def quantile(self, p: float, elapsed_hours: float = 0.0) -> float:
        """The ``p`` quantile of the transit time, given that it has lasted
        ``elapsed_hours`` without arriving."""
        if self.observed:
            hours = _observed_quantile(self.observed, p, elapsed_hours)
            return max(min(hours, MAX_TRANSIT_HOURS), elapsed_hours)
        parts = [
            (weight, NormalDist(math.log(median), min(max(spread, MIN_SPREAD), MAX_SPREAD)))
            for weight, median, spread in self.mixture or ((1.0, self.median_hours, self.spread),)
        ]

        def share(log_hours: float) -> float:
            return sum(weight * dist.cdf(log_hours) for weight, dist in parts)

        gone = share(math.log(elapsed_hours)) if elapsed_hours > 0 else 0.0
        q = min(gone + p * (1 - gone), 1 - 1e-9)
        if len(parts) == 1:
            hours = math.exp(parts[0][1].inv_cdf(q))
        else:
            low = min(dist.inv_cdf(1e-9) for _w, dist in parts)
            high = max(dist.inv_cdf(1 - 1e-9) for _w, dist in parts)
            for _ in range(60):
                middle = (low + high) / 2
                low, high = (middle, high) if share(middle) < q else (low, middle)
            hours = math.exp((low + high) / 2)
        return max(min(hours, MAX_TRANSIT_HOURS), elapsed_hours)


def _observed_quantile(observed: Sequence[float], p: float, elapsed: float) -> float:
    """The ``p`` point of the next transit among those that outlasted ``elapsed``; past
    all but the last TAIL_TRANSITS, what those had still ahead of them at the last but
    TAIL_TRANSITS, grown with the time already waited (a hold-up that has lasted long is
    likely to last longer: how long tails behave), and never less than a share of how
    late it is already (p² of it: a quarter at the median, as for any late shipment)."""
    p = 0.5 + (p - 0.5) * SHAPE_WIDENING
    beyond = observed[bisect.bisect_right(observed, elapsed) :]
    if len(beyond) >= TAIL_TRANSITS:
        point = _order_statistic(beyond, p, elapsed)
        # Even a lane of identical transits is not clockwork: the range is at least as
        # wide as the most regular lane's.
        median = _order_statistic(beyond, 0.5, elapsed)
        least = median * math.exp(NormalDist().inv_cdf(p) * MIN_SPREAD)
        return max(point, least) if p > 0.5 else min(point, least)
    pivot = observed[-TAIL_TRANSITS - 1]
    ahead = _order_statistic(observed[-TAIL_TRANSITS:], p, pivot) - pivot
    late = elapsed - observed[len(observed) // 2]
    least = elapsed * (math.exp(NormalDist().inv_cdf(p) * MIN_SPREAD) - 1) if p > 0.5 else 0.0
    return elapsed + max(ahead * max(elapsed, pivot) / pivot, late * p * p, least)


def _order_statistic(values: Sequence[float], p: float, floor: float) -> float:
    """The point the next value falls below with probability ``p``: the ``p(n + 1)``-th
    of ``n`` sorted values, interpolated; below the first, towards ``floor``."""
    position = p * (len(values) + 1) - 1
    if position <= 0:
        return floor + (values[0] - floor) * max(position + 1, 0.0)
    if position >= len(values) - 1:
        return values[-1]
    below = math.floor(position)
    return values[below] + (values[below + 1] - values[below]) * (position - below)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    due_at: datetime
    passed_at: datetime | None = None


@dataclass(frozen=True)
class ShipmentFacts:
    """What is known about one shipment when its ETA is read."""

    mode: str
    status: str
    dispatched_at: datetime | None = None
    promised_delivery_at: datetime | None = None
    delivered_at: datetime | None = None
    checkpoints: Sequence[Checkpoint] = ()
    exception_at: datetime | None = None
    # The latest out-for-delivery scan.
    out_for_delivery_at: datetime | None = None
    # Whether origin and destination are in one region (None: not known).
    same_region: bool | None = None


@dataclass(frozen=True)
class Estimate:
    eta: datetime | None
    earliest: datetime | None
    latest: datetime | None
    basis: str
    reason: str
    next_checkpoint: Checkpoint | None = None
    checkpoint_ahead: Checkpoint | None = None
    # The typical transit on this lane, and when the shipment should have arrived at
    # the latest, judged at dispatch: what "silent for too long" is measured against.
    typical_hours: float = DEFAULT_HOURS["carrier"]
    usual_silence_hours: float | None = None
    overdue_after: datetime | None = None
    checkpoint_delay_hours: float | None = None


# ======================================================================================
# The estimate
# ======================================================================================
def transit_model(facts: ShipmentFacts, lane: LaneStats) -> tuple[TransitModel, str, str]:
    """Where the estimate starts: (model, basis, why), ``why`` a clause for the reason."""
    mode = facts.mode if facts.mode in DEFAULT_HOURS else "carrier"
    promised = _promised_hours(facts)
    if lane.count >= MIN_LANE_HISTORY and lane.median_hours:
        if promised is not None and lane.promise_count >= MIN_LANE_HISTORY:
            model = TransitModel(promised * lane.promise_ratio, lane.promise_spread)
            if lane.shape_promise_ratios:
                model = TransitModel.of_transits(
                    [promised * ratio for ratio in lane.shape_promise_ratios],
                    lane.promise_spread,
                )
            why = (
                f"the promised {duration(promised)} corrected by this lane's record "
                f"({lane.promise_count} deliveries took {lane.promise_ratio:.0%} of their "
                "promised time at the median)"
            )
        else:
            model = TransitModel(lane.median_hours, lane.spread)
            if lane.shape_hours:
                model = TransitModel.of_transits(lane.shape_hours, lane.spread)
            why = (
                f"{lane.count} past deliveries on this lane took "
                f"{duration(lane.median_hours)} at the median"
            )
        return model, "lane_history", why
    planned = _planned_hours(facts)
    if promised is not None:
        assumed = TransitModel(promised, PROMISE_SPREAD[mode])
        beside = f" beside the promised {duration(promised)}"
        alone = ("promised", f"delivery was promised {duration(promised)} after dispatch")
    elif planned is not None:
        # A route planned checkpoint by checkpoint says more than a mode's default.
        assumed = TransitModel(planned, PROMISE_SPREAD[mode])
        beside = f" beside the route's plan of {duration(planned)}"
        count = len(facts.checkpoints)
        alone = (
            "checkpoints",
            f"the route's {count} {_plural(count, 'checkpoint', 'checkpoints')} plan arrival "
            f"{duration(planned)} after dispatch",
        )
    else:
        hours = DEFAULT_HOURS[mode] * REGION_FACTOR[facts.same_region]
        assumed = TransitModel(hours, DEFAULT_SPREAD)
        within = {True: " within one region", False: " between regions", None: ""}[
            facts.same_region
        ]
        kind = mode.replace("_", "-")
        # The estimate lies between a little history and this, so the sentence names both.
        beside = f" and the {duration(hours)} usually assumed for a {kind} transit{within}"
        alone = (
            "default",
            f"no history on this lane, so a {kind} transit of {duration(hours)}{within} is "
            "assumed and the range is wide",
        )
    if lane.count and lane.median_hours:
        # A little history moves the estimate towards itself, but the promise or the
        # assumption keeps its share until the lane has enough: one odd delivery (a
        # transfer recorded a minute after its dispatch) must not make a narrow range of
        # its own, nor may a promise this lane has been seen to miss.
        seen = TransitModel(lane.median_hours, max(DEFAULT_SPREAD, lane.spread))
        model = TransitModel.blend(seen, assumed, lane.count / MIN_LANE_HISTORY)
        why = (
            f"only {lane.count} past {_plural(lane.count, 'delivery', 'deliveries')} on this "
            f"lane ({duration(lane.median_hours)} at the median){beside}, so the range is wide"
        )
        return model, "default", why
    return assumed, *alone


def estimate(facts: ShipmentFacts, lane: LaneStats, now: datetime) -> Estimate:
    model, basis, why = transit_model(facts, lane)
    start = facts.dispatched_at or now
    overdue_after = start + timedelta(hours=model.quantile(0.9))
    common: dict = {
        "typical_hours": model.median_hours,
        "usual_silence_hours": lane.usual_silence_hours,
    }
    if facts.status not in ("delivered", "cancelled", "lost"):
        # A journey that has ended has no checkpoint to come.
        common["next_checkpoint"] = next_checkpoint(facts.checkpoints)
        common["checkpoint_ahead"] = checkpoint_ahead(facts.checkpoints)
    if facts.status == "delivered":
        if facts.delivered_at is None:
            return Estimate(None, None, None, basis, "Delivered.", **common)
        return Estimate(
            facts.delivered_at,
            facts.delivered_at,
            facts.delivered_at,
            basis,
            f"Delivered on {when(facts.delivered_at)}.",
            overdue_after=overdue_after,
            **common,
        )
    if facts.status == "cancelled":
        return Estimate(None, None, None, basis, "Cancelled before dispatch.", **common)
    if facts.status == "lost":
        return Estimate(
            None,
            None,
            None,
            basis,
            "Lost on the way: this shipment will not arrive.",
            overdue_after=overdue_after,
            **common,
        )
    if facts.status == "planned" or facts.dispatched_at is None:
        eta = _minute_up(now + timedelta(hours=model.quantile(0.5)))
        return Estimate(
            eta,
            _earliest(now + timedelta(hours=model.quantile(0.1)), now),
            _minute_up(now + timedelta(hours=model.quantile(0.9))),
            basis,
            f"Not dispatched yet; leaving now, it would arrive on {when(eta)} ({why}).",
            overdue_after=overdue_after,
            **common,
        )
    progress = _checkpoint_progress(facts.checkpoints, now)
    if progress is not None:
        result = _from_checkpoints(facts, model, lane, progress, now)
    else:
        result = _from_elapsed(facts, model, basis, why, now)
    result = _out_for_delivery(facts, result, now)
    result = _with_exception(facts, model, result, now)
    assert result.eta is not None and result.earliest is not None and result.latest is not None
    return Estimate(
        _minute_up(result.eta),
        _earliest(result.earliest, now),
        _minute_up(result.latest),
        result.basis,
        result.reason,
        overdue_after=overdue_after,
        checkpoint_delay_hours=result.checkpoint_delay_hours,
        **common,
    )


def _from_elapsed(
    facts: ShipmentFacts, model: TransitModel, basis: str, why: str, now: datetime
) -> Estimate:
    assert facts.dispatched_at is not None
    start = facts.dispatched_at
    elapsed = _hours(now - start)
    end = model.quantile(0.9)
    if model.observed:
        # The lane's own transits say how much is still ahead, however late it is.
        eta, earliest, latest = (
            start + timedelta(hours=model.quantile(p, elapsed)) for p in (0.5, 0.1, 0.9)
        )
    elif elapsed > end:
        # Past where this lane's arrivals end, a log-normal's thin tail would say "any
        # minute now" with a range of a minute. What was still ahead at that point
        # stays ahead (so the estimate never moves back as it gets later), and a
        # shipment that late is held up: the later, the more of it is still ahead.
        ahead = {p: timedelta(hours=model.quantile(p, end) - end) for p in (0.1, 0.5, 0.9)}
        held = _not_before(
            now,
            start + timedelta(hours=model.quantile(0.5)),
            start + timedelta(hours=model.quantile(0.1)),
            start + timedelta(hours=model.quantile(0.9)),
        )
        eta = max(now + ahead[0.5], held[0])
        latest = max(now + ahead[0.9], held[2])
        earliest = min(max(now + ahead[0.1], held[1]), eta)
    else:
        eta, earliest, latest = _not_before(
            now,
            start + timedelta(hours=model.quantile(0.5, elapsed)),
            start + timedelta(hours=model.quantile(0.1, elapsed)),
            start + timedelta(hours=model.quantile(0.9, elapsed)),
        )
    if not model.observed:
        # A shipment running late is no more predictable than one on time: its range
        # reaches at least as far past its estimate as arrivals reach past their median
        # at dispatch (a thin log-normal tail would say of a short promise overdue "in
        # 15 min, surely").
        latest = max(latest, eta + timedelta(hours=end - model.quantile(0.5)))
    if elapsed > model.quantile(0.5):
        reason = (
            f"Still on the way {duration(elapsed)} after dispatch, longer than usual "
            f"({why}); expected on {expected(eta)}."
        )
    else:
        reason = f"Expected on {expected(eta)}: {why}."
    return Estimate(eta, earliest, latest, basis, reason)


@dataclass(frozen=True)
class _Progress:
    index: int  # of the checkpoint the delay is measured at
    total: int
    checkpoint: Checkpoint
    delay_hours: float
    overdue: bool  # measured at a checkpoint not passed yet (a lower bound)


def next_checkpoint(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The first checkpoint not yet passed, even when it is overdue or a later one
    was passed: what a person checks on next."""
    return next((c for c in checkpoints if c.passed_at is None), None)


def checkpoint_ahead(checkpoints: Sequence[Checkpoint]) -> Checkpoint | None:
    """The first checkpoint after the last one passed: one whose scan was missed while
    a later one was passed is behind the shipment, so it is not overdue."""
    last = _last_passed(checkpoints)
    start = 0 if last is None else last + 1
    return checkpoints[start] if start < len(checkpoints) else None


def _last_passed(checkpoints: Sequence[Checkpoint]) -> int | None:
    passed = [i for i, c in enumerate(checkpoints) if c.passed_at is not None]
    return passed[-1] if passed else None


def _checkpoint_progress(checkpoints: Sequence[Checkpoint], now: datetime) -> _Progress | None:
    last = _last_passed(checkpoints)
    observed: _Progress | None = None
    if last is not None:
        c = checkpoints[last]
        assert c.passed_at is not None
        observed = _Progress(last, len(checkpoints), c, _hours(c.passed_at - c.due_at), False)
    start = 0 if last is None else last + 1
    if start < len(checkpoints) and checkpoints[start].due_at < now:
        c = checkpoints[start]
        overdue = _Progress(start, len(checkpoints), c, _hours(now - c.due_at), True)
        if observed is None or overdue.delay_hours > observed.delay_hours:
            return overdue
    return observed


def _from_checkpoints(
    facts: ShipmentFacts, model: TransitModel, lane: LaneStats, p: _Progress, now: datetime
) -> Estimate:
    assert facts.dispatched_at is not None
    plan = facts.promised_delivery_at or (facts.dispatched_at + timedelta(hours=model.median_hours))
    plan = max(plan, max(c.due_at for c in facts.checkpoints))
    delay = p.delay_hours
    total = max(_hours(plan - facts.dispatched_at), FLOOR_HOURS)
    remaining = min(max(_hours(plan - p.checkpoint.due_at), 0.0), total)
    carry = lane.carry
    if carry is not None:
        # The lane's record is of delays from about half-way: what the rest adds
        # scales with what is left, its variation like a random walk's.
        left = remaining / (total / 2)
        eta = plan + timedelta(hours=carry.persistence * delay + carry.added_hours * left)
        up = carry.high_hours * math.sqrt(left) + FLOOR_HOURS
        down = -carry.low_hours * math.sqrt(left) + FLOOR_HOURS
    else:
        # Legs vary independently, so what is left varies like a random walk: with the
        # square root of its share of the whole journey, not in proportion to it.
        eta = plan + timedelta(hours=DEFAULT_PERSISTENCE * delay)
        share = math.sqrt(remaining / total)
        doubt = DEFAULT_PERSISTENCE_DOUBT * abs(delay)
        up = total * share * (math.exp(Z80 * model.spread) - 1) + doubt + FLOOR_HOURS
        down = total * share * (1 - math.exp(-Z80 * model.spread)) + doubt + FLOOR_HOURS
    if p.overdue:
        # Not there yet: it may stay stuck a while longer.
        up += 0.5 * delay
    earliest = eta - timedelta(hours=down)
    latest = eta + timedelta(hours=up)
    eta, earliest, latest = _not_before(now, eta, earliest, latest)
    where = f"{p.checkpoint.name} (checkpoint {p.index + 1} of {p.total})"
    if p.overdue:
        reason = (
            f"{where} was due on {when(p.checkpoint.due_at)} and is not passed yet "
            f"({duration(delay)} overdue), so arrival is at least that late: expected on "
            f"{expected(eta)}."
        )
    else:
        if abs(delay) < NOTICEABLE_DELAY_HOURS:
            state = "on time"
        elif delay > 0:
            state = f"{duration(delay)} late"
        else:
            state = f"{duration(-delay)} early"
        reason = (
            f"{where} was passed {state}{_carry_on(carry, delay)}, so arrival is expected "
            f"on {expected(eta)}."
        )
    return Estimate(eta, earliest, latest, "checkpoints", reason, checkpoint_delay_hours=delay)


def _carry_on(carry: DelayCarry | None, delay: float) -> str:
    if abs(delay) < NOTICEABLE_DELAY_HOURS:
        return ""
    if carry is None:
        what = "a delay" if delay > 0 else "the time gained"
        return f" and {what} is assumed to last to the end"
    if carry.persistence < 0.9:
        return f" and this lane usually makes up {1 - carry.persistence:.0%} of a delay"
    if carry.persistence > 1.1:
        return f" and on this lane delays usually grow (by {carry.persistence - 1:.0%})"
    return " and on this lane delays usually last to the end"


def _out_for_delivery(facts: ShipmentFacts, e: Estimate, now: datetime) -> Estimate:
    """Out for delivery after its dispatch: it arrives within the day after the scan,
    so that window caps the estimate (which it never moves later)."""
    scan = facts.out_for_delivery_at
    if scan is None or facts.dispatched_at is None or scan < facts.dispatched_at:
        return e
    assert e.eta is not None and e.earliest is not None and e.latest is not None
    eta, earliest, latest = _not_before(
        now, *(scan + timedelta(hours=OUT_FOR_DELIVERY_HOURS[p]) for p in (0.5, 0.1, 0.9))
    )
    if eta >= e.eta and latest >= e.latest:
        return e  # expected sooner than the round ends anyway
    eta, earliest, latest = min(eta, e.eta), min(earliest, e.earliest), min(latest, e.latest)
    reason = (
        f"Out for delivery since {when(scan)}, so it arrives within the day: expected on "
        f"{expected(eta)}, by {expected(latest)} at the latest."
    )
    return Estimate(
        eta,
        earliest,
        latest,
        "checkpoints",
        reason,
        checkpoint_delay_hours=e.checkpoint_delay_hours,
    )


def _with_exception(
    facts: ShipmentFacts, model: TransitModel, e: Estimate, now: datetime
) -> Estimate:
    if facts.status != "exception" or e.eta is None or e.latest is None:
        return e
    eta = e.eta + timedelta(hours=EXCEPTION_DELAY_SHARE * model.median_hours)
    latest = e.latest + timedelta(hours=EXCEPTION_EXTRA_SHARE * model.median_hours)
    since = f" since {when(facts.exception_at)}" if facts.exception_at else ""
    reason = (
        f"The carrier reports an exception{since}, which usually costs time: expected on "
        f"{expected(eta)}, possibly as late as {expected(latest)}."
    )
    return Estimate(
        eta, e.earliest, latest, e.basis, reason, checkpoint_delay_hours=e.checkpoint_delay_hours
    )


def _not_before(
    now: datetime, eta: datetime, earliest: datetime, latest: datetime
) -> tuple[datetime, datetime, datetime]:
    """Something not delivered arrives after now: past its expected time, the longer
    it is late, the more of that lateness is still ahead of it."""
    if eta < now:
        late = now - eta
        width = max(latest - eta, late)
        eta = now + max(late / 4, timedelta(hours=FLOOR_HOURS))
        latest = now + width
    return eta, max(earliest, now), max(latest, eta)


# ======================================================================================
# Risk and change
# ======================================================================================
RISKS = ("on_track", "at_risk", "late", "delivered", "delivered_late", "lost")


def risk(
    status: str, estimate: Estimate, required_by: datetime | None, delivered_at: datetime | None
) -> str:
    """Judged against ``required_by``: ``late`` when the expected arrival is after it,
    ``at_risk`` when only the latest plausible one is."""
    if status == "lost":
        return "lost"
    if status == "delivered":
        if required_by is not None and delivered_at is not None and delivered_at > required_by:
            return "delivered_late"
        return "delivered"
    if required_by is None or estimate.eta is None or status == "cancelled":
        return "on_track"
    if estimate.eta > required_by:
        return "late"
    if estimate.latest is not None and estimate.latest > required_by:
        return "at_risk"
    return "on_track"


def moved(previous: datetime | None, current: datetime | None, step_minutes: float) -> bool:
    """Whether an ETA moved enough to be announced again; one that is gone (the
    shipment was lost or cancelled) is announced once, as null."""
    if current is None or previous is None:
        return current is not previous
    return abs(_hours(current - previous)) * 60 > step_minutes


# ======================================================================================
# Words
# ======================================================================================
def expected(moment: datetime) -> str:
    """An estimate, told as the ETA fields give it: rounded up to the minute."""
    return when(_minute_up(moment))


# The zone the times inside sentences are told in: UTC for the API and the bus; a page
# tells them in its reader's, as it shows every other time.
_told_in: ContextVar[tzinfo] = ContextVar("told_in", default=UTC)


@contextmanager
def times_told_in(zone: tzinfo) -> Iterator[None]:
    token = _told_in.set(zone)
    try:
        yield
    finally:
        _told_in.reset(token)


def when(moment: datetime | None) -> str:
    """A moment to the minute it falls in (estimates are rounded up to whole minutes
    before they get here; a delivery at 01:52:07 happened at 01:52)."""
    if moment is None:
        return "an unknown time"
    local = moment.astimezone(_told_in.get())
    offset = local.utcoffset() or timedelta(0)
    zone = "UTC"
    if offset:
        minutes = int(abs(offset).total_seconds()) // 60
        zone += f"{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{local.strftime('%d %b %H:%M').lstrip('0')} {zone}"


# A moment as when() tells it in UTC ("3 Dec 16:00 UTC"), not one told with an offset.
_TOLD_IN_UTC = re.compile(r"\b(\d{1,2} [A-Z][a-z]{2} \d{2}:\d{2}) UTC(?![+-]\d)")


def retold(sentence: str, written_at: datetime) -> str:
    """A sentence written once in UTC (an alert's message) with its times told in the
    zone of :func:`times_told_in`. Its dates carry no year: each is taken in the year
    that puts it nearest to when the sentence was written."""
    if _told_in.get().utcoffset(written_at) == timedelta(0):
        return sentence

    def local(match: re.Match[str]) -> str:
        moments = []
        for year in (written_at.year - 1, written_at.year, written_at.year + 1):
            try:
                moment = datetime.strptime(f"{year} {match[1]}", "%Y %d %b %H:%M")
            except ValueError:  # 29 Feb of a year without it
                continue
            moments.append(moment.replace(tzinfo=UTC))
        if not moments:
            return match[0]
        return when(min(moments, key=lambda m: abs(m - written_at)))

    return _TOLD_IN_UTC.sub(local, sentence)


def duration(hours: float) -> str:
    hours = abs(hours)
    if hours < 1:
        return f"{max(round(hours * 60), 1)} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _minute_down(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _minute_up(moment: datetime) -> datetime:
    down = _minute_down(moment)
    return down if down == moment else down + timedelta(minutes=1)


def _earliest(moment: datetime, now: datetime) -> datetime:
    """The earliest arrival of a shipment still to arrive, rounded down to the minute
    but never into the past: an earliest of now (or a few seconds after it) rounded
    down would name a moment already gone. Rounding up instead stays within the
    range, as the ETA is rounded up from a moment not before now."""
    return max(_minute_down(moment), _minute_up(now))


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _planned_hours(facts: ShipmentFacts) -> float | None:
    """The transit a route's checkpoints plan: to the last one, and one leg of the
    route's average length beyond it to the destination."""
    if not facts.checkpoints or facts.dispatched_at is None:
        return None
    to_last = _hours(max(c.due_at for c in facts.checkpoints) - facts.dispatched_at)
    if to_last <= 0:
        return None
    return to_last * (1 + 1 / len(facts.checkpoints))


def _promised_hours(facts: ShipmentFacts) -> float | None:
    if facts.promised_delivery_at is None or facts.dispatched_at is None:
        return None
    return max(_hours(facts.promised_delivery_at - facts.dispatched_at), FLOOR_HOURS)
