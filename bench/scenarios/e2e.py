"""End-to-end latency: a reservation confirmed over HTTP, its shipment planned by
shipments, and both visible in tracking's job view (``GET /tracking/api/v1/jobs/<id>``
lists the part with its shipment), at half the saturating rate.

The saturating rate is found first: a flood of reservations from wrk, then one more,
the sentinel; everything is through once the sentinel's job shows its shipment (each
service handles its queue in order). Then journeys start at half that rate.

A job view costs tracking as much as a reservation costs inventory, so journeys do
not poll it: one watcher asks tracking's database every few milliseconds which of the
waiting jobs now have their shipment line (what the job view reads), and each journey
then fetches its job view once, which must show the part with its shipment. The
latency is to the moment the watcher saw it; the confirming view's own answer time is
reported beside it.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from dataclasses import dataclass, field, replace

import psycopg

from bench import profile, wrk
from bench.client import Client
from bench.report import NotMeasured, Outcome, Row, ms, per_second, verdict
from bench.stack import Run, Stack
from shared.config import SERVICES

TARGET_P99_MS = 50.0
JOURNEY_THREADS = 32
VISIBLE_TIMEOUT = 30.0
# The rows tracking's job view reads a part's shipment from.
SHIPPED_JOBS = """
SELECT DISTINCT s.job_id FROM shipments s JOIN shipment_lines l ON l.shipment_id = s.id
 WHERE s.job_id = ANY(%s)
"""


@dataclass(frozen=True)
class Journey:
    latency: float | None  # seconds from the 201 until tracking holds the shipment
    view: float | None  # seconds the confirming job view took to answer
    shown: bool  # the job view listed the part with its shipment
    late_start: float = 0.0  # how far behind its schedule the journey began
    error: str | None = None  # the reservation itself failed


@dataclass
class _Waiting:
    seen: threading.Event = field(default_factory=threading.Event)
    at: float = 0.0


class Watcher:
    """Polls tracking's database for the jobs journeys wait on."""

    def __init__(self, stack: Stack, poll: float) -> None:
        self.conn = stack.connect("tracking")
        self.poll = poll
        self.waiting: dict[str, _Waiting] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.failure: Exception | None = None
        self.thread = threading.Thread(target=self._loop, name="e2e-watcher", daemon=True)
        self.thread.start()

    def expect(self, job_id: str) -> _Waiting:
        waiting = _Waiting()
        with self.lock:
            self.waiting[job_id] = waiting
        return waiting

    def _loop(self) -> None:
        while not self.stopped.wait(self.poll):
            with self.lock:
                jobs = list(self.waiting)
            if not jobs:
                continue
            try:
                rows = self.conn.execute(SHIPPED_JOBS, (jobs,)).fetchall()
            except psycopg.Error as error:
                self.failure = error
                return
            now = time.perf_counter()
            with self.lock:
                for (job_id,) in rows:
                    waiting = self.waiting.pop(job_id, None)
                    if waiting is not None:
                        waiting.at = now
                        waiting.seen.set()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.conn.close()


class Journeys:
    def __init__(self, run: Run, stack: Stack, ports: dict[str, int], poll: float) -> None:
        token = run.tokens["service"]
        self.inventory = Client(ports["inventory"], token)
        self.tracking = Client(ports["tracking"], token)
        self.catalogue = run.catalogue
        self.watcher = Watcher(stack, poll)
        self.chooser = random.Random(7)
        self.lock = threading.Lock()

    def one(self, job_id: str, timeout: float = VISIBLE_TIMEOUT) -> Journey:
        with self.lock:
            warehouse = self.chooser.choice(self.catalogue.warehouses)
            part = self.chooser.choice(self.catalogue.parts)
        waiting = self.watcher.expect(job_id)
        body = self.catalogue.reservation(job_id, warehouse, part)
        answer = self.inventory.post("/inventory/api/v1/reservations", body)
        if answer.status != 201:
            raise RuntimeError(f"reservation for {job_id} answered {answer.status}: {answer.body}")
        confirmed = time.perf_counter()
        if not waiting.seen.wait(timeout):
            if self.watcher.failure is not None:
                raise NotMeasured(f"tracking's tables could not be read: {self.watcher.failure}")
            return Journey(None, None, False)
        asked = time.perf_counter()
        view = self.tracking.get(f"/tracking/api/v1/jobs/{job_id}")
        shown = view.status == 200 and _shows_shipment(view.body, part)
        return Journey(max(0.0, waiting.at - confirmed), time.perf_counter() - asked, shown)

    def at_rate(self, rate: float, seconds: float, label: str) -> list[Journey]:
        total = max(1, int(rate * seconds))
        results: list[Journey | None] = [None] * total
        numbers = itertools.count()
        begin = time.perf_counter() + 0.2

        def walk() -> None:
            while (i := next(numbers)) < total:
                wait = begin + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                try:
                    journey = self.one(f"{label}-{i}")
                except RuntimeError as error:
                    journey = Journey(None, None, False, error=str(error))
                results[i] = replace(journey, late_start=max(0.0, -wait))

        threads = [threading.Thread(target=walk) for _ in range(min(JOURNEY_THREADS, total))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.watcher.close()


def _shows_shipment(view: object, part: str) -> bool:
    if not isinstance(view, dict):
        return False
    return any(
        p.get("part_number") == part and p.get("shipment_id") for p in view.get("parts") or []
    )


def run(run: Run, outcome: Outcome) -> None:
    options = run.options
    stack = Stack(run, "e2e")
    journeys: Journeys | None = None
    try:
        ports = stack.up(["inventory", "tracking"], {service: 1 for service in SERVICES})
        journeys = Journeys(run, stack, ports, options.poll_ms / 1000)
        probe = journeys.one("E2E-PROBE", timeout=60)
        if probe.latency is None or not probe.shown:
            raise NotMeasured("tracking's job view did not list a part with its shipment in 60 s")
        journeys.at_rate(20, options.warmup, "E2E-WARMUP")

        saturating, flooded = _saturating_rate(run, stack, journeys, ports["inventory"])
        rate = saturating / 2
        walked = journeys.at_rate(rate, options.duration, "E2E")
        latencies = sorted(j.latency for j in walked if j.latency is not None)
        views = sorted(j.view for j in walked if j.view is not None)
        failed = [j.error for j in walked if j.error]
        missing = len(walked) - len(latencies) - len(failed)
        not_shown = sum(1 for j in walked if j.latency is not None and not j.shown)
        if not latencies:
            raise NotMeasured("no journey became visible in tracking")
        p50, p99 = _percentile(latencies, 50) * 1000, _percentile(latencies, 99) * 1000
        view_p50, view_p99 = _percentile(views, 50) * 1000, _percentile(views, 99) * 1000
        outcome.figures.update(
            saturating_per_s=round(saturating, 1),
            flood_reservations=flooded,
            rate_per_s=round(rate, 1),
            journeys=len(walked),
            not_visible_within_s={"seconds": VISIBLE_TIMEOUT, "count": missing},
            job_view_without_the_shipment=not_shown,
            reservations_failed=len(failed),
            first_failure=failed[0] if failed else None,
            p50_ms=round(p50, 1),
            p99_ms=round(p99, 1),
            max_ms=round(latencies[-1] * 1000, 1),
            poll_ms=options.poll_ms,
            confirming_view_p50_ms=round(view_p50, 1),
            confirming_view_p99_ms=round(view_p99, 1),
            started_late=sum(1 for j in walked if j.late_start > 0.01),
        )
        problems = []
        if failed:
            problems.append(f"{len(failed)} reservations failed")
        if missing:
            problems.append(f"{missing} not visible in {VISIBLE_TIMEOUT:.0f} s")
        if not_shown:
            problems.append(f"{not_shown} job views without the shipment")
        outcome.rows.append(
            Row(
                "End-to-end: reservation confirmed → shipment planned → in tracking's job "
                f"view, at half the saturating rate ({per_second(saturating)})",
                f"p50 {ms(p50)} · p99 {ms(p99)} at {per_second(rate)} (the job view then "
                f"answers in p50 {ms(view_p50)} · p99 {ms(view_p99)})"
                + "".join(f" · {p}" for p in problems),
                "—",
                "—",
                f"p99 < {TARGET_P99_MS:.0f} ms",
                verdict(p99 < TARGET_P99_MS and not problems),
            )
        )
        if options.profile:
            _profile(run, stack, ports["inventory"], outcome)
    finally:
        if journeys is not None:
            journeys.close()
        stack.close()


def _profile(run: Run, stack: Stack, inventory_port: int, outcome: Outcome) -> None:
    """Another flood, with py-spy on tracking's worker: the last and busiest stage (each
    reservation brings it two messages, each judged against the lane's history)."""
    options = run.options
    worker = stack.process("worker tracking")
    output = run.workdir / "e2e-profile.txt"
    try:
        sampler = profile.Sampler(worker.pid, options.duration, output)
        wrk.run(
            f"http://127.0.0.1:{inventory_port}",
            run.catalogue.reserve_args("E2E-PROFILE"),
            wrk.Load(options.threads, options.connections, options.duration / 2),
            token=run.tokens["service"],
        )
        sampler.finish()
    except RuntimeError as error:
        outcome.figures["profile"] = f"not profiled: {error}"
        return
    outcome.hot_spots.update(
        profile.hot_spots(
            output, profile.HANDLING, "reservation and shipment events (tracking worker)"
        )
    )


def _saturating_rate(
    run: Run, stack: Stack, journeys: Journeys, inventory_port: int
) -> tuple[float, int]:
    """Reservations per second the whole path absorbs when flooded."""
    options = run.options
    with stack.connect("inventory") as conn:

        def reservations() -> int:
            row = conn.execute("SELECT count(*) FROM reservations").fetchone()
            return row[0] if row else 0

        before = reservations()
        started = time.perf_counter()
        wrk.run(
            f"http://127.0.0.1:{inventory_port}",
            run.catalogue.reserve_args("E2E-FLOOD"),
            # A cap only: wrk is stopped once the flood is in.
            wrk.Load(options.threads, options.connections, max(30.0, options.flood / 20)),
            token=run.tokens["service"],
            stop_when=lambda: reservations() - before >= options.flood,
        )
        sentinel = journeys.one("E2E-SENTINEL", timeout=options.flood / 5 + 120)
        if sentinel.latency is None:
            raise NotMeasured("the flood did not reach tracking's job view in time")
        elapsed = time.perf_counter() - started
        flooded = reservations() - before
    return flooded / elapsed, flooded


def _percentile(values: list[float], p: float) -> float:
    """Nearest rank of sorted ``values``."""
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]
