"""The broker misbehaves: stopped mid-burst, connections closed under traffic, a link
that blackholes, a publish nobody can route."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from sqlalchemy import select

from services import bootstrap
from shared.bus import connection as bus_connection
from shared.bus import relay as relay_module
from shared.bus.relay import ConfirmTimeout, OutboxRelay
from tests.conftest import wait_until
from tests.faults.checker import History
from tests.faults.conftest import (
    CommandPublisher,
    Lab,
    reserve_command,
    reserve_over_http,
)
from tests.support import reservation_body

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults")]
V1 = "/inventory/api/v1"


@pytest.mark.timeout(240)
class TestBrokerRestart:
    def test_stop_app_mid_burst_of_1000_reservations_applies_each_exactly_once(
        self, lab: Lab
    ) -> None:
        lab.receive("GEL-250", "CDU", 1000)
        lab.receive("XRT-2000", "CDU", 50)
        lab.inventory_worker(threads=2)
        lab.watcher_worker()
        history = History()
        over_http = [
            reservation_body(
                job_id=f"R-http-{i}",
                part_number="XRT-2000" if i % 10 == 0 else "GEL-250",
                warehouse="CDU",
            )
            for i in range(500)
        ]
        publisher = CommandPublisher(lab.settings.broker_url, lab.prefix, history)

        def publish_commands() -> None:
            for i in range(500):
                job_id = f"R-bus-{i}"
                publisher.send("inventory.reserve", reserve_command(job_id), message_id=job_id)
                time.sleep(0.02)  # a steady stream, so that the outage falls inside it

        commands = threading.Thread(target=publish_commands)
        commands.start()
        http_statuses: dict[int, int] = {}
        requests = threading.Thread(
            target=lambda: http_statuses.update(reserve_over_http(lab, over_http, history))
        )
        requests.start()
        try:
            wait_until(
                lambda: len([k for k in history.keys if k.startswith("R-bus-")]) >= 100,
                timeout=60,
                message="traffic under way",
            )
            lab.rabbit.stop_app()
            time.sleep(3)  # the broker stays down a while; traffic goes on meanwhile
        finally:
            lab.rabbit.start_app()
        requests.join(timeout=120)
        commands.join(timeout=120)
        publisher.close()
        assert http_statuses == {201: 500}
        assert len(history.acknowledged_keys) == 1000
        assert publisher.failures > 0, "the broker stop should have been felt by the publisher"

        lab.assert_every_job_once(history, "R-")
        stock = {
            row["part_number"]: row for row in lab.api().get(f"{V1}/stock", warehouse="CDU").body
        }
        assert (stock["GEL-250"]["reserved"], stock["XRT-2000"]["reserved"]) == (950, 50)
        lab.assert_nothing_dead()


@pytest.mark.timeout(180)
class TestConnectionChurn:
    def test_workers_reconnect_and_reregister_while_connections_are_closed(self, lab: Lab) -> None:
        lab.receive("GEL-250", "CDU", 5000)
        lab.inventory_worker()
        lab.watcher_worker()
        consumers = {
            "inventory-consumer": "inventory.commands",
            "watcher-consumer": "watcher.events",
        }
        history = History()
        publisher = CommandPublisher(lab.settings.broker_url, lab.prefix, history)
        done = threading.Event()

        def publish_commands() -> None:
            i = 0
            while not done.is_set():
                job_id = f"C-bus-{i}"
                publisher.send("inventory.reserve", reserve_command(job_id), message_id=job_id)
                i += 1
                time.sleep(0.02)

        def post_reservations() -> None:
            i = 0
            while not done.is_set():
                reserve_over_http(lab, [reserve_command(f"C-http-{i}")], history, threads=1)
                i += 1
                time.sleep(0.02)

        traffic = [
            threading.Thread(target=publish_commands),
            threading.Thread(target=post_reservations),
        ]
        for thread in traffic:
            thread.start()
        try:
            for _ in range(3):
                time.sleep(2)
                before = {name: lab.rabbit.connections(name) for name in consumers}
                lab.rabbit.close_all_connections()
                # Every consumer comes back on a new connection, on its own, and
                # registers on its queue again.
                for name, queue in consumers.items():
                    wait_until(
                        lambda n=name, old=before[name]: set(lab.rabbit.connections(n)) - set(old),
                        timeout=45,
                        interval=0.3,
                        message=f"{name} on a new connection",
                    )
                    lab.wait_for_consumers(queue, 1)
        finally:
            done.set()
            for thread in traffic:
                thread.join(timeout=60)
            publisher.close()
        assert publisher.failures > 0, "the publisher's connection should have been closed too"
        assert len(history.acknowledged_keys) > 100

        lab.assert_every_job_once(history, "C-")
        lab.assert_nothing_dead()
        for worker in lab.workers:
            assert worker.failure is None


@pytest.mark.timeout(150)
class TestBlackholedBroker:
    def test_publishes_fail_within_the_confirm_timeout_and_go_out_once_healed(
        self, lab: Lab, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Short heartbeats, so that a dead link is noticed in seconds rather than a minute.
        monkeypatch.setattr(bus_connection, "HEARTBEAT_SECONDS", 2)
        lab.receive("GEL-250", "CDU", 100)
        proxy = lab.proxy()
        through_proxy = lab.settings.with_overrides(broker_url=proxy.url(lab.settings.broker_url))
        lab.watcher_worker()
        lab.inventory_worker(broker_url=through_proxy.broker_url)
        history = History()
        reserve_over_http(lab, [reserve_command(f"H-before-{i}") for i in range(5)], history)
        lab.settle_downstream(history)

        # A relay of our own, connected through the proxy before the link goes dead.
        relay = OutboxRelay(lab.inventory.db, through_proxy, bootstrap.bus_topology(through_proxy))
        relay.publish([])
        proxy.blackhole()
        reserve_over_http(lab, [reserve_command(f"H-dark-{i}") for i in range(20)], history)
        assert len(history.acknowledged_keys) == 25, "the HTTP API does not need the broker"

        outcome: list[BaseException | int] = []
        attempt = threading.Thread(target=lambda: outcome.append(_relay_once(relay)))
        attempt.start()
        attempt.join(timeout=lab.settings.confirm_timeout + 10)
        assert not attempt.is_alive(), "a publish on a dead link hung"
        assert isinstance(outcome[0], ConfirmTimeout), outcome
        time.sleep(lab.settings.confirm_timeout * 2)  # the worker's own relay tries too
        assert lab.unsent() >= 20, "nothing may be marked sent while the link is dead"

        proxy.heal()
        lab.wait_outbox_drained()
        lab.assert_every_job_once(history, "H-")
        # The worker's consumer found its way back through the proxy as well.
        lab.wait_for_consumers("inventory.commands", 1)
        commands = History()
        publisher = CommandPublisher(lab.settings.broker_url, lab.prefix, commands)
        publisher.send("inventory.reserve", reserve_command("H-after"), message_id="H-after")
        publisher.close()
        lab.settle_in_inventory(commands, "H-after")


def _relay_once(relay: OutboxRelay) -> BaseException | int:
    try:
        return relay.relay_once()
    except Exception as exc:
        return exc


@pytest.mark.timeout(90)
class TestUnroutablePublish:
    def test_an_unroutable_command_stays_unsent_until_someone_listens(
        self, lab: Lab, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(relay_module, "UNROUTABLE_RETRY", timedelta(seconds=1))
        lab.receive("GEL-250", "CDU", 5)
        lab.inventory_worker()
        with lab.inventory.db.transaction() as tx:
            command_id = tx.send_command(
                "fieldservice.job.notify", data={"job_id": "U-1"}, subject="U-1"
            )
            event_id = tx.publish("inventory.stock.counted", data={"warehouse": "CDU"})
        history = History()
        reserve_over_http(lab, [reserve_command("U-2")], history)

        def row(message_id: str) -> Any:
            outbox = lab.inventory.db.bus.outbox
            with lab.inventory.db.reading() as session:
                return session.execute(
                    select(outbox).where(outbox.c.message_id == message_id)
                ).one()

        # An event nobody listens to is dropped by the broker, as on any topic: sent.
        wait_until(lambda: row(event_id).sent_at, timeout=20, message="the event sent")
        wait_until(lambda: row(command_id).attempts >= 2, timeout=20, message="two tries")
        refused = row(command_id)
        assert refused.sent_at is None
        assert "unroutable" in refused.last_error
        lab.settle_in_inventory(history, "U-")
        assert lab.unsent() == 1

        # The field-service system comes online: its queue binds the command.
        queue = lab.queue("fieldservice.commands")
        with Connection(lab.settings.broker_url, connect_timeout=5) as conn:
            Queue(
                queue,
                exchange=Exchange(f"{lab.prefix}.commands", type="topic", durable=True),
                routing_key="fieldservice.#",
                durable=True,
            )(conn.channel()).declare()
        wait_until(lambda: row(command_id).sent_at, timeout=20, message="the command sent")
        delivered = lab.drain("fieldservice.commands")
        assert [m.properties["message_id"] for m in delivered] == [command_id]
