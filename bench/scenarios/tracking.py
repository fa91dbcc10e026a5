"""Tracking under load, with a long lane history: tracking events ingested per second,
and the latency of an ETA and of a job view.

The history (delivered shipments, their scans and transit times) is copied into
tracking's tables; the shipments on their way are made the way users make them:
reservations, the shipments planned for them, dispatched over shipments' API.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import history, profile, wrk
from bench.catalogue import SITE_REGION
from bench.client import Client
from bench.processes import wait_for
from bench.report import NotMeasured, Outcome, Row, ms, per_second
from bench.stack import Run, Stack
from shared.config import SERVICES

CARRIER = "BENCHPOST"
V1 = "/tracking/api/v1"


def run(run: Run, outcome: Outcome) -> None:
    options = run.options
    stack = Stack(run, "tracking")
    try:
        lanes = [
            (code, run.catalogue.region(code), SITE_REGION, mode, carrier)
            for code in _one_per_region(run)
            for mode, carrier in (("carrier", CARRIER), ("carrier", "OTHERPOST"), ("courier", ""))
        ]
        loaded = time.perf_counter()
        with stack.connect("tracking") as conn:
            history.load(conn, lanes, options.history)
        load_seconds = time.perf_counter() - loaded
        ports = stack.up(SERVICES, {service: 1 for service in SERVICES})
        shipments, jobs = _shipments_on_their_way(run, ports, options.jobs)
        service = Client(ports["tracking"], run.tokens["service"])
        sample = _contract_probe(service, shipments[0], jobs[0])

        url = f"http://127.0.0.1:{ports['tracking']}"
        load = wrk.Load(options.threads, options.connections, options.duration)
        token = run.tokens["service"]
        shipment_ids = _ids_file(run.workdir / "tracking-shipments.txt", shipments)
        job_ids = _ids_file(run.workdir / "tracking-jobs.txt", jobs)
        warmup = wrk.Load(options.threads, options.connections, options.warmup)
        wrk.run(url, ["get", V1 + "/shipments/{id}/eta", shipment_ids], warmup, token=token)
        eta = wrk.run(url, ["get", V1 + "/shipments/{id}/eta", shipment_ids], load, token=token)
        job = wrk.run(url, ["get", V1 + "/jobs/{id}", job_ids], load, token=token)
        first_scan = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        events = wrk.run(url, ["event", shipment_ids, str(first_scan)], load, token=token)
        outcome.figures.update(
            lane_history=options.history,
            lanes=len(lanes),
            history_load_seconds=round(load_seconds, 1),
            shipments_in_transit=len(shipments),
            eta_basis=sample["basis"],
            eta=eta.as_dict(),
            job_view=job.as_dict(),
            events=events.as_dict(),
        )
        history_words = f"{options.history:,} delivered shipments in lane history"
        outcome.rows += [
            Row(
                f"Tracking: events ingested/s (POST /events, {len(shipments)} shipments in "
                f"transit, {history_words})",
                _summary(events, 201),
            ),
            Row(
                f"Tracking: ETA latency (GET /shipments/<id>/eta, basis {sample['basis']}), "
                f"{history_words}",
                _summary(eta, 200, latency_first=True),
            ),
            Row(
                f"Tracking: job view latency (GET /jobs/<id>), {history_words}",
                _summary(job, 200, latency_first=True),
            ),
        ]
        if options.profile:
            _profile(run, stack, url, job_ids, outcome)
    finally:
        stack.close()


def _profile(run: Run, stack: Stack, url: str, job_ids: str, outcome: Outcome) -> None:
    """Job views again, with py-spy on tracking's web app."""
    options = run.options
    web = stack.process("web tracking")
    output = run.workdir / "tracking-profile.txt"
    try:
        sampler = profile.Sampler(web.pid, options.duration, output)
        load = wrk.Load(options.threads, options.connections, options.duration)
        wrk.run(url, ["get", V1 + "/jobs/{id}", job_ids], load, token=run.tokens["service"])
        sampler.finish()
    except RuntimeError as error:
        outcome.figures["profile"] = f"not profiled: {error}"
        return
    outcome.hot_spots.update(profile.hot_spots(output, profile.SERVING, "job view (tracking web)"))


def _summary(result: wrk.WrkResult, ok: int, latency_first: bool = False) -> str:
    rate = per_second(result.rate(ok))
    latency = f"p50 {ms(result.p50_ms)} · p99 {ms(result.p99_ms)}"
    text = f"{latency} at {rate}" if latency_first else f"{rate} · {latency}"
    odd = result.unexpected(ok)
    return text + (f" · {odd} not {ok}" if odd else "")


def _one_per_region(run: Run) -> list[str]:
    seen: dict[str, str] = {}
    for code in run.catalogue.warehouses:
        seen.setdefault(run.catalogue.region(code), code)
    return list(seen.values())


def _ids_file(path: Path, ids: list[str]) -> str:
    path.write_text("\n".join(ids) + "\n")
    return str(path)


def _shipments_on_their_way(
    run: Run, ports: dict[str, int], count: int
) -> tuple[list[str], list[str]]:
    """``count`` jobs, each with a reservation whose planned shipment is dispatched by
    carrier; returns (shipment ids, job ids) once tracking shows every one in transit."""
    service = Client(ports["inventory"], run.tokens["service"])
    logistics = Client(ports["shipments"], run.tokens["logistics"])
    tracking = Client(ports["tracking"], run.tokens["service"])
    chooser = random.Random(11)
    jobs = [f"TRK-{i}" for i in range(count)]
    bodies = [
        run.catalogue.reservation(
            job, chooser.choice(run.catalogue.warehouses), chooser.choice(run.catalogue.parts)
        )
        for job in jobs
    ]
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda body: service.expect(
                    "POST", "/inventory/api/v1/reservations", body, status=201
                ),
                bodies,
            )
        )

    def planned() -> list[dict[str, Any]]:
        listed = logistics.get("/shipments/api/v1/shipments?status=planned&page_size=1000")
        return listed.body if listed.status == 200 and len(listed.body) >= count else []

    shipments = wait_for(planned, timeout=count / 5 + 60, what=f"{count} planned shipments")
    now = datetime.now(UTC)

    def dispatch(numbered: tuple[int, dict[str, Any]]) -> str:
        i, shipment = numbered
        logistics.expect(
            "POST",
            f"/shipments/api/v1/shipments/{shipment['id']}/dispatch",
            {
                "mode": "carrier",
                "carrier": CARRIER,
                "tracking_number": f"BENCH{i:06d}",
                "dispatched_at": (now - timedelta(hours=2)).isoformat(),
                "promised_delivery_at": (now + timedelta(hours=30)).isoformat(),
                "checkpoints": [
                    {"name": "Valley hub", "due_at": (now + timedelta(hours=4)).isoformat()},
                    {"name": "High pass", "due_at": (now + timedelta(hours=16)).isoformat()},
                ],
            },
        )
        return shipment["id"]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(dispatch, enumerate(shipments)))

    def in_transit(shipment_id: str) -> bool:
        answer = tracking.get(f"{V1}/shipments/{shipment_id}/eta")
        return answer.status == 200 and answer.body.get("status") == "in_transit"

    wait_for(lambda: in_transit(ids[-1]), timeout=count / 5 + 60, what="tracking to follow")
    for shipment_id in ids:
        wait_for(lambda s=shipment_id: in_transit(s), timeout=60, what=f"shipment {shipment_id}")
    job_ids = sorted({s["job_id"] for s in shipments if s.get("job_id")})
    return ids, job_ids


def _contract_probe(tracking: Client, shipment_id: str, job_id: str) -> dict[str, Any]:
    """The ETA and the job view answer with the contract's fields, or nothing is measured."""
    eta = tracking.get(f"{V1}/shipments/{shipment_id}/eta")
    view = tracking.get(f"{V1}/jobs/{job_id}")
    fields = {"shipment_id", "status", "eta", "eta_earliest", "eta_latest", "basis", "risk"}
    if eta.status != 200 or not fields <= set(eta.body or {}):
        raise NotMeasured(f"tracking's ETA does not answer as the contract says: {eta.status}")
    parts = (view.body or {}).get("parts") if view.status == 200 else None
    if not parts or not parts[0].get("shipment_id"):
        raise NotMeasured(f"tracking's job view does not list the part with its shipment: {view}")
    return eta.body
