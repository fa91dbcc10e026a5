"""The consumer misbehaves or meets bad messages: killed at each point of handling a
message, a handler that runs far longer than the heartbeat, poison and malformed
messages, and a broker whose work queue lacks its dead-letter settings."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from kombu import Connection, Exchange, Queue
from sqlalchemy.engine import make_url

from shared.bus import connection as bus_connection
from shared.bus.envelope import make_envelope
from tests.conftest import wait_until
from tests.faults.checker import History, assert_exactly_once, reservations_per_job
from tests.faults.conftest import (
    CONFIRMED,
    CommandPublisher,
    Lab,
    reserve_command,
    reserve_over_http,
)

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults")]


def inventory_database(lab: Lab) -> str:
    url = make_url(lab.settings.db_url("inventory"))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def stock_locked(lab: Lab) -> Iterator[None]:
    """Hold every stock row, so that a reservation's transaction waits inside, before
    its commit, for as long as the test needs."""
    with psycopg.connect(inventory_database(lab)) as conn:
        conn.execute("SELECT 1 FROM stock FOR UPDATE")
        yield
        conn.rollback()


def a_transaction_waits_on_the_stock(lab: Lab) -> bool:
    name = make_url(lab.settings.db_url("inventory")).database
    with psycopg.connect(lab.postgres.admin_url) as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (name,),
        ).fetchone()
    return bool(waiting and waiting[0])


def commands_queue(lab: Lab) -> dict[str, int]:
    return lab.rabbit.queues()[lab.queue("inventory.commands")]


def settled(lab: Lab) -> bool:
    """Every command was acked: none waits, none is out with a consumer."""
    queue = commands_queue(lab)
    return queue["ready"] + queue["unacked"] == 0


@pytest.mark.timeout(120)
class TestConsumerKilled:
    """SIGKILL at each point of handling a reserve command; the end state is exactly
    one application each time."""

    def _start(self, lab: Lab) -> tuple[History, CommandPublisher]:
        lab.receive("GEL-250", "CDU", 10)
        lab.watcher_worker()
        history = History()
        return history, CommandPublisher(lab.settings.broker_url, lab.prefix, history)

    def _finish(self, lab: Lab, history: History, publisher: CommandPublisher) -> None:
        publisher.close()
        lab.assert_every_job_once(history, "K-")
        wait_until(lambda: settled(lab), timeout=30, message="the command queue empty")
        lab.assert_nothing_dead()

    def test_killed_before_commit(self, lab: Lab) -> None:
        history, publisher = self._start(lab)
        worker = lab.spawn_inventory_worker("worker-1")
        lab.wait_for_consumers("inventory.commands", 1)
        with stock_locked(lab):
            publisher.send("inventory.reserve", reserve_command("K-1"), "K-1")
            wait_until(lambda: a_transaction_waits_on_the_stock(lab), timeout=30)
            worker.kill()
            assert reservations_per_job(lab.inventory, "K-") == {}
        lab.spawn_inventory_worker("worker-2")
        self._finish(lab, history, publisher)

    def test_killed_after_commit_before_ack(self, lab: Lab) -> None:
        history, publisher = self._start(lab)
        proxy = lab.proxy()
        worker = lab.spawn_inventory_worker(
            "worker-1", broker_url=proxy.url(lab.settings.broker_url)
        )
        lab.wait_for_consumers("inventory.commands", 1)
        with stock_locked(lab):
            publisher.send("inventory.reserve", reserve_command("K-1"), "K-1")
            wait_until(lambda: a_transaction_waits_on_the_stock(lab), timeout=30)
            # The ack will not reach the broker.
            proxy.blackhole()
        wait_until(
            lambda: reservations_per_job(lab.inventory, "K-") == {"K-1": 1},
            timeout=30,
            message="the commit",
        )
        worker.kill()
        proxy.cut()
        wait_until(
            lambda: commands_queue(lab)["ready"] == 1, timeout=30, message="the command back"
        )
        lab.spawn_inventory_worker("worker-2")
        self._finish(lab, history, publisher)

    def test_killed_after_ack(self, lab: Lab) -> None:
        history, publisher = self._start(lab)
        worker = lab.spawn_inventory_worker("worker-1")
        lab.wait_for_consumers("inventory.commands", 1)
        publisher.send("inventory.reserve", reserve_command("K-1"), "K-1")
        lab.settle_downstream(history)
        wait_until(lambda: settled(lab), timeout=30, message="the ack")
        worker.kill()
        lab.spawn_inventory_worker("worker-2")
        # The client sends it again, not knowing whether it arrived: still one effect.
        publisher.send("inventory.reserve", reserve_command("K-1"), "K-1")
        self._finish(lab, history, publisher)


@pytest.mark.timeout(120)
class TestLongHandler:
    SECONDS = 10

    def test_a_handler_far_longer_than_the_heartbeat_keeps_its_connection(
        self, lab: Lab, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Heartbeats every 2 s: the broker drops a connection silent for 4 s, so a
        # 10 s handler survives only if heartbeats are served off its thread.
        monkeypatch.setattr(bus_connection, "HEARTBEAT_SECONDS", 2)
        lab.watcher.slow_seconds = self.SECONDS
        lab.receive("GEL-250", "CDU", 10)
        lab.inventory_worker()
        lab.watcher_worker(threads=2)
        [consumer_connection] = lab.rabbit.connections("watcher-consumer")
        history = History()
        started = time.monotonic()
        reserve_over_http(lab, [reserve_command("SLOW-1")], history)
        reserve_over_http(lab, [reserve_command(f"QUICK-{i}") for i in range(5)], history)
        lab.settle_downstream(history)
        assert time.monotonic() - started >= self.SECONDS
        assert lab.rabbit.connections("watcher-consumer") == [consumer_connection]
        assert_exactly_once(history, lab.watcher.effects_per_job(CONFIRMED), "events applied")
        # Handled once, acked at the end: nothing was redelivered.
        assert set(lab.watcher.calls.values()) == {1}
        wait_until(
            lambda: lab.rabbit.queues()[lab.queue("watcher.events")]["unacked"] == 0,
            timeout=20,
            message="the last ack",
        )
        assert lab.rabbit.queues()[lab.queue("watcher.events")]["ready"] == 0


@pytest.mark.timeout(120)
class TestPoisonAndMalformed:
    def test_bad_messages_reach_the_dead_queue_within_the_limit_and_others_flow(
        self, lab: Lab
    ) -> None:
        limit = lab.settings.delivery_limit
        lab.receive("GEL-250", "CDU", 50)
        lab.inventory_worker()
        lab.watcher_worker()
        history = History()
        assert reserve_over_http(lab, [reserve_command("POISON-1")], History()) == {201: 1}
        events = Exchange(f"{lab.prefix}.events", type="topic", durable=True)
        # Confirmed, so that what the test sends is surely on the queue.
        with Connection(
            lab.settings.broker_url,
            connect_timeout=5,
            transport_options={"confirm_publish": True},
        ) as conn:
            producer = conn.Producer()
            for body, message_id in (
                (b"\xff not json", "junk-1"),
                (json.dumps({"id": "half-1", "type": CONFIRMED}).encode(), "half-1"),
                (
                    json.dumps(
                        make_envelope(
                            CONFIRMED, source="partsflow/elsewhere", data={}, id="empty-1"
                        )
                    ).encode(),
                    "empty-1",
                ),
            ):
                producer.publish(
                    body,
                    exchange=events,
                    routing_key=CONFIRMED,
                    message_id=message_id,
                    content_type="application/cloudevents+json",
                    content_encoding="binary",
                    declare=[],
                    retry=False,
                )
        reserve_over_http(lab, [reserve_command(f"FINE-{i}") for i in range(20)], history)
        lab.settle_downstream(history)
        dead: list = []
        wait_until(
            lambda: dead.extend(lab.drain("watcher.dead")) or len(dead) >= 4,
            timeout=60,
            message="four dead letters",
        )
        malformed = {"junk-1", "half-1", "empty-1"}
        by_id = {m.properties.get("message_id"): m for m in dead}
        assert len(dead) == 4 and malformed <= set(by_id), sorted(by_id)
        [poisoned] = [m for key, m in by_id.items() if key not in malformed]
        assert json.loads(poisoned.body)["data"]["job_id"] == "POISON-1"
        # Tried exactly the delivery limit's number of times, then set aside.
        assert lab.watcher.calls[poisoned.properties["message_id"]] == limit
        assert_exactly_once(history, lab.watcher.effects_per_job(CONFIRMED), "events applied")
        assert lab.drain("inventory.dead") == []


@pytest.mark.timeout(90)
class TestStartupCheck:
    def test_a_worker_refuses_to_run_when_its_queue_lacks_dead_lettering(self, lab: Lab) -> None:
        prefix = f"{lab.prefix}-bare"
        with Connection(lab.settings.broker_url, connect_timeout=5) as conn:
            # Someone made the work queue by hand, without its dead-letter exchange.
            Queue(
                f"{prefix}.inventory.commands",
                durable=True,
                queue_arguments={"x-queue-type": "quorum"},
            )(conn.channel()).declare()
        worker = lab.spawn_inventory_worker("worker-bare", bus_prefix=prefix)
        try:
            status = worker.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the worker ran on a queue without dead-lettering:\n{worker.output()[-2000:]}"
            )
        assert status != 0
        assert "dead-letter" in worker.output()
