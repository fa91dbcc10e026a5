"""The benchmark's scenarios, by the name `--only` takes. Each fills in an
:class:`~bench.report.Outcome`: figures for the JSON and rows for the table."""

from __future__ import annotations

from collections.abc import Callable

from bench.report import Outcome
from bench.scenarios import bus, e2e, embedded, hot, http, tracking
from bench.stack import Run

Scenario = Callable[[Run, Outcome], None]

SCENARIOS: dict[str, Scenario] = {
    "http": http.run,
    "bus": bus.run_commands,
    "e2e": e2e.run,
    "hot": hot.run,
    "tracking": tracking.run,
    "scaleout": bus.run_scaleout,
    "embedded": embedded.run,
}

# The figure each scenario stands for, for the table when it could not be measured.
TITLES = {
    "http": "HTTP reservations/s vs the raw ceiling",
    "bus": "Reservations/s as bus commands vs raw pika",
    "e2e": "End-to-end latency reservation → shipment → tracking job view",
    "hot": "One hot part, many concurrent clients",
    "tracking": "Tracking: events ingested/s, ETA and job view latency",
    "scaleout": "Scale-out: 1 → 2 worker processes per service",
    "embedded": "Embedded (`partsflow run`) reservations/s",
}
