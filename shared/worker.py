"""A service's background work in one process: the outbox relay, the message
consumer and any periodic jobs (tracking's alert scan), each on its own thread."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bus.consumer import MessageConsumer, Route
from shared.bus.relay import OutboxRelay
from shared.bus.topology import Topology
from shared.config import Settings
from shared.db import Database, is_transient_db_error
from shared.metrics import CountersCollector, OutboxCollector, QueueCollector

log = logging.getLogger("partsflow.worker")


# How long background work waits for the messages in hand before its next step: it
# goes second, but it goes on under a steady stream.
YIELD_SECONDS = 0.05


@dataclass(frozen=True)
class PeriodicJob:
    """``run(pause)`` every ``interval`` seconds; long work calls ``pause()`` between
    its steps, which lets the messages the worker holds be handled first."""

    name: str
    interval: float
    run: Callable[[Callable[[], None]], Any]


@dataclass
class Worker:
    service: str
    settings: Settings
    db: Database
    topology: Topology
    routes: Mapping[str, Route]
    target: Any
    periodic: Sequence[PeriodicJob] = ()
    consumer_threads: int = 1
    relay: OutboxRelay = field(init=False)
    consumer: MessageConsumer = field(init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    failure: BaseException | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.relay = OutboxRelay(self.db, self.settings, self.topology)
        self.consumer = MessageConsumer(
            settings=self.settings,
            topology=self.topology,
            service=self.service,
            db=self.db,
            routes=self.routes,
            target=self.target,
            threads=self.consumer_threads,
        )

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        def guarded(name: str, body: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    body()
                except BaseException as exc:  # a dead thread must stop the process
                    self.failure = exc
                    log.exception("%s stopped", name, extra={"service": self.service})
                    stop.set()

            return run

        targets: list[tuple[str, Callable[[], None]]] = [
            (f"{self.service}-relay", lambda: self.relay.run(stop)),
        ]
        if self.routes:
            targets.append((f"{self.service}-consumer", lambda: self.consumer.run(stop)))
        for job in self.periodic:
            targets.append((f"{self.service}-{job.name}", _every(job, stop, self._pause)))
        self._threads = [
            threading.Thread(target=guarded(name, body), name=name, daemon=True)
            for name, body in targets
        ]
        for thread in self._threads:
            thread.start()
        if self.settings.worker_port:
            self._serve_probes(stop)
        return self._threads

    def _pause(self) -> None:
        if self.routes:
            self.consumer.wait_until_quiet(YIELD_SECONDS)

    # -- probes ------------------------------------------------------------------------
    def alive(self) -> bool:
        """Every part runs (a dead thread also stops the process)."""
        return self.failure is None and all(t.is_alive() for t in self._threads)

    def readiness(self) -> dict[str, str]:
        """Each check of ``/readyz`` and how it went: every part runs, the consumer
        holds a broker connection, the database answers."""
        checks = {"threads": "ok" if self.alive() else "stopped"}
        if self.routes:
            checks["broker"] = "ok" if self.consumer.connected.is_set() else "not connected"
        try:
            self.db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {exc.__class__.__name__}"
        return checks

    def counters(self) -> dict[str, Any]:
        stats = self.consumer.stats
        return {
            "messages_applied": stats.applied,
            "messages_duplicate": stats.duplicates,
            "messages_retried": stats.retried,
            "messages_dead_lettered": stats.dead_lettered,
            "commands_rejected": stats.rejected,
            "broker_reconnects": stats.reconnects + self.relay.reconnects,
            "events_published": self.relay.published_total,
        }

    def _serve_probes(self, stop: threading.Event) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(CountersCollector(self.counters, self.service))
        registry.register(OutboxCollector(self.db))
        registry.register(QueueCollector(self.settings, self.service))
        worker = self

        class Probes(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    status, body = 200, generate_latest(registry)
                    kind = "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    ok = worker.alive()
                    status, kind = (200 if ok else 503), "application/json"
                    body = json.dumps(
                        {"status": "ok" if ok else "failing", "service": worker.service}
                    ).encode()
                elif self.path == "/readyz":
                    checks = worker.readiness()
                    ok = all(result == "ok" for result in checks.values())
                    status, kind = (200 if ok else 503), "application/json"
                    body = json.dumps(
                        {
                            "status": "ready" if ok else "not ready",
                            "service": worker.service,
                            "checks": checks,
                        }
                    ).encode()
                else:
                    status, kind, body = 404, "text/plain", b"not found"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("0.0.0.0", self.settings.worker_port), Probes)
        server.daemon_threads = True
        serving = threading.Thread(
            target=server.serve_forever, name=f"{self.service}-probes", daemon=True
        )

        def close_when_stopped() -> None:
            stop.wait()
            server.shutdown()
            server.server_close()

        closing = threading.Thread(target=close_when_stopped, daemon=True)
        for thread in (serving, closing):
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float = 30) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout)

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT; the exit status says whether a part failed."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("stopping on signal %s", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start(stop)
        stop.wait()
        self.join()
        return 1 if self.failure else 0


def _every(
    job: PeriodicJob, stop: threading.Event, pause: Callable[[], None]
) -> Callable[[], None]:
    def loop() -> None:
        while not stop.wait(job.interval):
            try:
                job.run(pause)
            except Exception as exc:
                if is_transient_db_error(exc):
                    log.warning("%s: database unavailable", job.name)
                else:
                    log.exception("%s failed", job.name)

    return loop
