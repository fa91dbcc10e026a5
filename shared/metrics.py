"""Prometheus collectors the web apps and the workers share: the outbox's backlog,
the broker's queue depths (consumer lag), and what a worker's consumer has done."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from shared.bus.connection import connect
from shared.config import Settings
from shared.db import Database

QUEUE_PURPOSES = ("commands", "events")


class OutboxCollector:
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        outbox = self.db.bus.outbox
        try:
            with self.db.reading() as session:
                count, oldest = session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                ).one()
        except Exception:
            return []
        unsent = GaugeMetricFamily(
            "partsflow_outbox_unsent", "Outbox rows not yet confirmed by the broker"
        )
        unsent.add_metric([], count)
        lag = GaugeMetricFamily(
            "partsflow_outbox_lag_seconds", "Age of the oldest unsent outbox row"
        )
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        lag.add_metric([], max(0.0, age))
        return [unsent, lag]


class QueueCollector:
    """Messages waiting in a service's queues (its consumer lag) and in its dead-letter
    queue, read from the broker at scrape time."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        prefix = settings.bus_prefix
        self.queues = [f"{prefix}.{service}.{purpose}" for purpose in QUEUE_PURPOSES]
        self.queues.append(f"{prefix}.{service}.dead")
        self.service = service

    def collect(self) -> Iterable[Metric]:
        if self.settings.is_memory_bus:
            return []
        messages = GaugeMetricFamily(
            "partsflow_queue_messages", "Messages waiting in a queue", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "partsflow_queue_consumers", "Consumers attached to a queue", labels=["queue"]
        )
        connection = connect(self.settings, name=f"{self.service}-metrics")
        try:
            connection.ensure_connection(max_retries=1)
            for name in self.queues:
                channel = connection.channel()
                try:
                    _, count, attached = channel.queue_declare(name, passive=True)
                except Exception:
                    continue
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
                messages.add_metric([name], count)
                consumers.add_metric([name], attached)
        except Exception:
            return []
        finally:
            with contextlib.suppress(Exception):
                connection.release()
        return [messages, consumers]


class CountersCollector:
    """Counters kept in memory by a worker (its consumer's stats, its relay's total)."""

    def __init__(self, read: Callable[[], dict[str, Any]], service: str) -> None:
        self.read = read
        self.service = service

    def collect(self) -> Iterable[Metric]:
        for name, value in self.read().items():
            counter = CounterMetricFamily(
                f"partsflow_worker_{name}",
                f"Worker {name.replace('_', ' ')}",
                labels=["service"],
            )
            counter.add_metric([self.service], value)
            yield counter
