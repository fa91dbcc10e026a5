"""Reservations as bus commands, against raw pika through the same kind of queue; and
the whole bus path with one and with two worker processes per service.

Timings come from the inbox every service keeps: each applied message's row carries
the moment its handler began, so process start-up is not counted.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pika

from bench import broker, profile
from bench.broker import Outgoing
from bench.processes import Process, machine_cpu_seconds, wait_for
from bench.report import Outcome, Row, per_second, percent, verdict
from bench.stack import Run, Stack
from services import bootstrap
from shared.bus.envelope import CONTENT_TYPE, encode, make_envelope

TARGET = 0.50
SCALE_TARGET = 1.7


@dataclass(frozen=True)
class Applied:
    count: int
    first: datetime | None
    last: datetime | None

    @property
    def seconds(self) -> float:
        return (self.last - self.first).total_seconds() if self.first and self.last else 0.0

    @property
    def rate(self) -> float:
        return (self.count - 1) / self.seconds if self.seconds else 0.0


def reserve_commands(run: Run, stack: Stack, count: int, label: str) -> list[Outgoing]:
    """``inventory.reserve`` commands as a field-service system sends them."""
    chooser = random.Random(label)
    exchange = f"{stack.settings.bus_prefix}.commands"
    commands = []
    for i in range(count):
        data = run.catalogue.reservation(
            f"{label}-{i}",
            chooser.choice(run.catalogue.warehouses),
            chooser.choice(run.catalogue.parts),
        )
        envelope = make_envelope("inventory.reserve", source="bench/field-service", data=data)
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=envelope["id"],
            type="inventory.reserve",
            app_id="bench",
        )
        body = encode(envelope).encode()
        commands.append(Outgoing(exchange, "inventory.reserve", body, properties))
    return commands


def applied(stack: Stack, service: str, message_type: str) -> Applied:
    with stack.connect(service) as conn:
        row = conn.execute(
            "SELECT count(*), min(received_at), max(received_at) FROM inbox"
            " WHERE message_type = %s",
            (message_type,),
        ).fetchone()
    assert row is not None
    return Applied(*row)


def wait_applied(
    stack: Stack, service: str, message_type: str, count: int, processes: list[Process]
) -> Applied:
    timeout = count / 10 + 120
    deadline = time.monotonic() + timeout
    while True:
        done = applied(stack, service, message_type)
        if done.count >= count:
            return done
        dead = [p for p in processes if not p.alive()]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{service} applied {done.count} of {count} {message_type} in {timeout:.0f}s"
            )
        time.sleep(0.1)


# -- reservations as bus commands ---------------------------------------------------------------
def run_commands(run: Run, outcome: Outcome) -> None:
    options = run.options
    url, count = options.amqp_url, options.messages
    stack = Stack(run, "bus")
    try:
        topology = bootstrap.bus_topology(stack.settings)
        commands = reserve_commands(run, stack, count, "BUS")
        prefetch = stack.settings.consumer_prefetch

        # The ceiling: the same bodies through a quorum queue of the same arguments.
        queue = f"{stack.settings.bus_prefix}.bench.ceiling"
        stack.extra_queues.append(queue)
        broker.declare_queue(url, queue, topology.work_queue_arguments("bench"))
        publish_seconds = broker.publish_confirmed(
            url, [replace(c, exchange="", routing_key=queue) for c in commands]
        )
        wait_for(lambda: broker.queue_state(url, queue)[0] >= count, timeout=60, what=queue)
        consumed = broker.consume_acked(url, queue, count, prefetch, timeout=60)
        consume_seconds = consumed.last - consumed.first
        ceiling_rate = count / (publish_seconds + consume_seconds)

        # The app: pre-published commands, then the inventory worker.
        commands_queue = f"{stack.settings.bus_prefix}.inventory.commands"
        broker.publish_confirmed(url, commands)
        wait_for(
            lambda: broker.queue_state(url, commands_queue)[0] >= count,
            timeout=60,
            what=commands_queue,
        )
        started = time.perf_counter()
        workers = stack.workers("inventory")
        cpu_at_start = workers[0].cpu_seconds()
        done = wait_applied(stack, "inventory", "inventory.reserve", count, workers)
        wall = time.perf_counter() - started
        cpu_ms = 1000 * (workers[0].cpu_seconds() - cpu_at_start) / count
        with stack.connect("inventory") as conn:
            row = conn.execute("SELECT count(*) FROM reservations").fetchone()
        reservations = row[0] if row else 0
        ratio = done.rate / ceiling_rate if ceiling_rate else 0.0
        outcome.figures.update(
            messages=count,
            message_bytes=len(commands[0].body),
            prefetch=prefetch,
            queue_type=stack.settings.queue_type,
            app_reservations_per_s=round(done.rate, 1),
            app_seconds_first_to_last=round(done.seconds, 3),
            app_wall_seconds_from_worker_start=round(wall, 3),
            # From the moment it consumed: start-up is left out, the relay is counted.
            app_worker_cpu_ms_per_command=round(cpu_ms, 2),
            reservations_confirmed=reservations,
            ceiling_per_s=round(ceiling_rate, 1),
            ceiling_publish_confirmed_per_s=round(count / publish_seconds, 1),
            ceiling_consume_acked_per_s=round(consumed.rate, 1),
            ratio=round(ratio, 4),
        )
        rejected = count - reservations
        outcome.rows.append(
            Row(
                f"Reservations/s as bus commands (1 worker, prefetch {prefetch}, "
                f"{stack.settings.queue_type} queue, {count} commands)",
                f"{per_second(done.rate)} · {cpu_ms:.1f} ms worker CPU/command"
                + (f" · {rejected} rejected" if rejected else ""),
                f"{per_second(ceiling_rate)} (pika: publish with confirms "
                f"{per_second(count / publish_seconds)}, consume + ack "
                f"{per_second(consumed.rate)})",
                percent(ratio),
                f"≥ {percent(TARGET)}",
                verdict(ratio >= TARGET and rejected == 0),
            )
        )
        if options.profile:
            _profile(run, stack, workers[0], done.rate, outcome)
    finally:
        stack.close()


def _profile(run: Run, stack: Stack, worker: Process, rate: float, outcome: Outcome) -> None:
    seconds = run.options.duration
    more = reserve_commands(run, stack, max(50, int(rate * seconds)), "BUS-profile")
    output = run.workdir / "bus-profile.txt"
    try:
        broker.publish_confirmed(run.options.amqp_url, more)
        sampler = profile.Sampler(worker.pid, seconds, output)
        sampler.finish(timeout=seconds + 60)
    except RuntimeError as error:
        outcome.figures["profile"] = f"not profiled: {error}"
        return
    outcome.hot_spots.update(
        profile.hot_spots(output, profile.HANDLING, "reserve commands (inventory worker)")
    )


# -- scale-out: one and two workers per service on the bus path ------------------------------
def run_scaleout(run: Run, outcome: Outcome) -> None:
    count = run.options.path_messages
    paths: dict[int, dict[str, Any]] = {}
    for workers in (1, 2):
        paths[workers] = _bus_path(run, workers, count)
    ratio = paths[2]["path"] / paths[1]["path"] if paths[1]["path"] else 0.0
    outcome.figures.update(messages=count, one=paths[1], two=paths[2], ratio=round(ratio, 3))

    def stages(k: int) -> str:
        p = paths[k]
        return (
            f"{k}: {per_second(p['path'])} (inventory {per_second(p['inventory'])}, shipments "
            f"{per_second(p['shipments'])}, tracking {per_second(p['tracking'])}; machine CPU "
            f"busy {percent(p['machine_busy'])})"
        )

    outcome.rows.append(
        Row(
            f"Scale-out: bus path reserve → shipment planned → tracking, 1 → 2 worker "
            f"processes per service, {count} commands",
            f"{stages(1)} → {stages(2)}",
            "—",
            f"{ratio:.2f}×",
            f"≥ {SCALE_TARGET}×",
            verdict(ratio >= SCALE_TARGET),
        )
    )


def _bus_path(run: Run, workers: int, count: int) -> dict[str, Any]:
    stack = Stack(run, f"scaleout{workers}")
    try:
        stack.up(workers={service: workers for service in ("tracking", "shipments", "inventory")})
        started = list(stack.processes)
        # The seeded warehouses reach the other services before the commands do.
        warehouses = len(run.catalogue.warehouses)
        for service in ("shipments", "tracking"):
            wait_applied(stack, service, "inventory.warehouse.created", warehouses, started)
        commands = reserve_commands(run, stack, count, f"SCALE{workers}")
        services = ("inventory", "shipments", "tracking")
        cpu_before = {s: sum(p.cpu_seconds() for p in stack.running_workers(s)) for s in services}
        busy_before, total_before = machine_cpu_seconds()
        broker.publish_confirmed(run.options.amqp_url, commands)
        inventory = wait_applied(stack, "inventory", "inventory.reserve", count, started)
        shipments = wait_applied(
            stack, "shipments", "inventory.reservation.confirmed", count, started
        )
        tracking = wait_applied(stack, "tracking", "shipments.shipment.planned", count, started)
        busy_after, total_after = machine_cpu_seconds()
        # Why a second worker cannot help when the first already keeps every core busy.
        cpu_ms = {
            s: round(
                1000
                * (sum(p.cpu_seconds() for p in stack.running_workers(s)) - cpu_before[s])
                / count,
                2,
            )
            for s in services
        }
        assert inventory.first is not None and tracking.last is not None
        path_seconds = (tracking.last - inventory.first).total_seconds()
        return {
            "path": round(count / path_seconds, 1) if path_seconds else 0.0,
            "inventory": round(inventory.rate, 1),
            "shipments": round(shipments.rate, 1),
            "tracking": round(tracking.rate, 1),
            "seconds": round(path_seconds, 3),
            "machine_busy": round(
                (busy_after - busy_before) / max(total_after - total_before, 1e-9), 3
            ),
            "worker_cpu_ms_per_reservation": cpu_ms,
        }
    finally:
        stack.close()
