"""How big and how long each scenario runs: three presets, then the command line's
overrides."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    preset: str = "full"
    # Every wrk run (an app and its ceiling alike).
    duration: float = 15.0
    # An app and its ceiling take turns this many times within the duration, so that
    # a change in the machine's load falls on both.
    rounds: int = 3
    warmup: float = 3.0
    threads: int = 2
    connections: int = 8
    hot_connections: int = 64
    # gunicorn sync workers per web app, as `partsflow web` starts them by default.
    web_workers: int = 4
    # The catalogue the reservations spread over (parts x warehouses, ample stock).
    warehouses: int = 20
    parts: int = 50
    # Bus scenarios: commands published for the workers to take (the whole bus path,
    # three services deep, gets fewer).
    messages: int = 3000
    path_messages: int = 1000
    # End to end: reservations in the flood that finds the saturating rate.
    flood: int = 1000
    poll_ms: float = 5.0
    # Tracking: delivered shipments in lane history, and the jobs on their way.
    history: int = 100_000
    jobs: int = 200
    scenarios: tuple[str, ...] = ()
    profile: bool = True
    results_dir: Path = DEFAULT_RESULTS
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    log_level: str = "INFO"
    keep: bool = False

    @property
    def writes_readme(self) -> bool:
        """Only a run into the project's own results folder updates bench/README.md."""
        return self.results_dir.resolve() == DEFAULT_RESULTS and self.preset != "smoke"


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        "duration": 6.0,
        "rounds": 2,
        "warmup": 1.0,
        "warehouses": 10,
        "parts": 20,
        "messages": 1000,
        "path_messages": 300,
        "flood": 300,
        "history": 100_000,
        "jobs": 60,
    },
    "smoke": {
        "duration": 1.0,
        "rounds": 1,
        "warmup": 0.3,
        "connections": 4,
        "hot_connections": 16,
        "web_workers": 1,
        "warehouses": 3,
        "parts": 4,
        "messages": 60,
        "path_messages": 40,
        "flood": 40,
        "history": 2_000,
        "jobs": 6,
    },
}


def preset(name: str, **overrides: Any) -> Options:
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return replace(Options(preset=name), **values)
