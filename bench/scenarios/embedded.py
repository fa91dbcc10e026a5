"""The embedded system (`partsflow run`: one process, SQLite, the in-process bus), for
reference: reservations per second under the same wrk load."""

from __future__ import annotations

import socket
import sys

from bench import wrk
from bench.catalogue import ON_HAND, Catalogue
from bench.client import Client
from bench.processes import Process, answers, wait_for
from bench.report import Outcome, Row, ms, per_second
from bench.stack import START_TIMEOUT, Run, base_environment
from shared.auth import UserStore

# SQLite is seeded over HTTP: a smaller catalogue keeps that short.
WAREHOUSES, PARTS = 5, 10


def run(run: Run, outcome: Outcome) -> None:
    options = run.options
    data_dir = run.workdir / "embedded"
    data_dir.mkdir()
    token = UserStore(data_dir / "users.json").add("bench-admin", "admin")
    port = _free_port()
    # What a new user has: a data folder and nothing else set.
    env = {
        **base_environment(),
        "PARTSFLOW_DATA_DIR": str(data_dir),
        "PARTSFLOW_LOG_LEVEL": options.log_level,
    }
    process = Process(
        "partsflow run",
        [sys.executable, "-m", "services.cli", "run", "--port", str(port)],
        env,
        run.workdir / "embedded.log",
    )
    try:
        wait_for(
            lambda: answers(port, "/inventory/healthz"),
            timeout=START_TIMEOUT,
            what="partsflow run",
            process=process,
        )
        catalogue = Catalogue.of_size(
            min(WAREHOUSES, options.warehouses), min(PARTS, options.parts)
        )
        _seed(Client(port, token), catalogue)
        url = f"http://127.0.0.1:{port}"
        warmup = wrk.Load(options.threads, options.connections, options.warmup)
        wrk.run(url, catalogue.reserve_args("EMB-warmup"), warmup, token=token)
        load = wrk.Load(options.threads, options.connections, options.duration)
        result = wrk.run(url, catalogue.reserve_args("EMB"), load, token=token)
        outcome.figures.update(
            wrk=result.as_dict(),
            warehouses=len(catalogue.warehouses),
            parts=len(catalogue.parts),
        )
        odd = result.unexpected(201)
        outcome.rows.append(
            Row(
                f"Embedded (`partsflow run`, SQLite, in-process bus) reservations/s, "
                f"{options.connections} connections",
                f"{per_second(result.rate(201))} · p50 {ms(result.p50_ms)} · "
                f"p99 {ms(result.p99_ms)}" + (f" · {odd} not 201" if odd else ""),
                "—",
                "—",
                "reference",
            )
        )
    finally:
        run.memory.extend({"scenario": "embedded", **vars(p)} for p in process.peak_memory())
        process.stop()


def _seed(client: Client, catalogue: Catalogue) -> None:
    for code in catalogue.warehouses:
        client.expect(
            "POST",
            "/inventory/api/v1/warehouses",
            {"code": code, "name": code, "region": catalogue.region(code), "kind": "depot"},
            status=201,
        )
    for number in catalogue.parts:
        client.expect(
            "POST",
            "/inventory/api/v1/parts",
            {"part_number": number, "description": number, "serialized": False},
            status=201,
        )
    for code in catalogue.warehouses:
        for number in catalogue.parts:
            client.expect(
                "POST",
                "/inventory/api/v1/receipts",
                {"warehouse": code, "part_number": number, "quantity": ON_HAND},
                status=201,
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
