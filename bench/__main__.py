"""`python -m bench` (`make bench`): run the scenarios, print the table, write
``bench/results/<date>.json`` and ``bench/results/latest.md``."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import psycopg

from bench import broker, report, wrk
from bench.options import Options, preset
from bench.processes import ROOT
from bench.report import FAILED, MEASURED, NOT_MEASURED, NotMeasured, Outcome, Row
from bench.scenarios import SCENARIOS, TITLES
from bench.stack import Run


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Partsflow's benchmark: every figure with its raw ceiling, in one run.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short runs (a few minutes)")
    size.add_argument(
        "--smoke", action="store_true", help="tiny runs that only show the harness works"
    )
    parser.add_argument("--duration", type=float, help="seconds of each measured load run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before a load run")
    parser.add_argument(
        "--rounds", type=int, help="turns an app and its ceiling take within the duration"
    )
    parser.add_argument("--threads", type=int, help="wrk threads")
    parser.add_argument("--connections", type=int, help="wrk connections (clients)")
    parser.add_argument("--hot-connections", type=int, help="clients of the hot-part scenario")
    parser.add_argument("--web-workers", type=int, help="gunicorn sync workers per web app")
    parser.add_argument("--messages", type=int, help="commands for the bus ratio")
    parser.add_argument("--path-messages", type=int, help="commands for the scale-out runs")
    parser.add_argument("--flood", type=int, help="reservations that find the saturating rate")
    parser.add_argument("--history", type=int, help="delivered shipments in lane history")
    parser.add_argument("--jobs", type=int, help="jobs with a shipment in transit (tracking)")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        help="run this scenario only (repeatable)",
    )
    parser.add_argument("--skip", action="append", choices=list(SCENARIOS), default=[])
    parser.add_argument("--no-profile", action="store_true", help="do not run py-spy")
    parser.add_argument("--results-dir", type=Path, help="where results go (bench/results)")
    parser.add_argument("--pg-url", help="PostgreSQL to create the pfbench_ databases on")
    parser.add_argument("--amqp-url", help="RabbitMQ the run's bus prefix lives on")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (processes' logs)"
    )
    args = parser.parse_args(argv)
    chosen = args.only or list(SCENARIOS)
    return preset(
        "smoke" if args.smoke else "quick" if args.quick else "full",
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        connections=args.connections,
        hot_connections=args.hot_connections,
        web_workers=args.web_workers,
        messages=args.messages,
        path_messages=args.path_messages,
        flood=args.flood,
        history=args.history,
        jobs=args.jobs,
        scenarios=tuple(name for name in chosen if name not in args.skip),
        profile=False if args.no_profile else None,
        results_dir=args.results_dir,
        pg_url=args.pg_url,
        amqp_url=args.amqp_url,
        keep=args.keep or None,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    problem = _missing_ground(options)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    # A stop from outside still drops the databases and deletes the queues.
    signal.signal(signal.SIGTERM, _interrupted)
    started = datetime.now(UTC)
    machine = _machine(options)
    run = Run(options)
    say(f"run {run.run_id}: {', '.join(options.scenarios)} (preset {options.preset})")
    outcomes: list[Outcome] = []
    try:
        say("preparing template databases")
        run.prepare_templates()
        for name in options.scenarios:
            outcomes.append(_run_scenario(run, name))
    finally:
        run.close()
        if options.keep:
            say(f"logs kept in {run.workdir}")
    machine["load_after"] = _load()
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "preset": options.preset,
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(options).items()
            if k not in ("pg_url", "amqp_url")
        },
        "machine": machine,
        "memory": run.memory,
    }
    path = report.write(options.results_dir, results, outcomes)
    text = report.markdown(results, outcomes)
    print(text)
    say(f"results: {path} and {path.with_name('latest.md')}")
    if options.writes_readme:
        report.update_readme(text)
    return 1 if any(o.status == FAILED for o in outcomes) else 0


def _run_scenario(run: Run, name: str) -> Outcome:
    outcome = Outcome(name)
    say(f"{name}: {TITLES[name]}")
    started = time.perf_counter()
    try:
        SCENARIOS[name](run, outcome)
    except NotMeasured as reason:
        outcome.status, outcome.reason = NOT_MEASURED, str(reason)
    except Exception as error:
        # One broken scenario must not cost the others' figures; the run exits non-zero.
        traceback.print_exc(file=sys.stderr)
        outcome.status, outcome.reason = FAILED, f"{error.__class__.__name__}: {error}"[:2000]
    outcome.seconds = round(time.perf_counter() - started, 1)
    if outcome.status != MEASURED:
        outcome.rows = [Row(TITLES[name], outcome.status, result=outcome.status)]
    say(f"{name}: {outcome.status} in {outcome.seconds:.0f}s")
    return outcome


def say(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _missing_ground(options: Options) -> str | None:
    try:
        wrk.require_wrk()
    except wrk.WrkMissing as error:
        return str(error)
    for name, url, default_port in (
        ("PostgreSQL", options.pg_url, 5432),
        ("RabbitMQ", options.amqp_url, 5672),
    ):
        parts = urlsplit(url)
        try:
            with socket.create_connection((parts.hostname, parts.port or default_port), 2):
                pass
        except OSError:
            return f"{name} is not reachable at {parts.hostname}:{parts.port or default_port}"
    return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _machine(options: Options) -> dict[str, Any]:
    with psycopg.connect(options.pg_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    with pika.BlockingConnection(broker.parameters(options.amqp_url)) as connection:
        properties = connection._impl.server_properties
    version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    )
    return {
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "python": platform.python_version(),
        "postgresql": row[0] if row else None,
        "rabbitmq": _text(properties.get("version")),
        "wrk": (version.stdout or version.stderr).split(" [")[0].strip(),
        "commit": commit.stdout.strip(),
    }


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    sys.exit(main())
