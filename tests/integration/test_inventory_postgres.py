"""Reservations never oversell: many processes at once over HTTP on PostgreSQL, and
bus commands through RabbitMQ, including duplicates and poison. (A broker restart is
in tests/faults, on a private broker.)"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import func, select

import shared.db as shared_db
from services import bootstrap
from services.inventory.models import Reservation, ReservationUnit
from services.inventory.schemas import ReserveCommand
from shared.bus.envelope import make_envelope
from shared.bus.store import Transaction
from shared.db import PING_AFTER_IDLE_SECONDS
from tests.busclient import BusClient
from tests.conftest import AMQP_URL, PG_ADMIN_URL, make_settings, wait_until
from tests.integration.conftest import InventoryUnderTest, start_inventory
from tests.processes import environment, free_port, json_headers, partsflow, wait_for_http
from tests.support import reservation_body, seed_catalogue

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]
V1 = "/inventory/api/v1"


@pytest.fixture
def pg_inventory(postgres, rabbitmq, tmp_path: Path) -> Iterator[InventoryUnderTest]:
    settings = make_settings(
        tmp_path,
        inventory_db_url=postgres.create("inventory"),
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("inv"),
        delivery_limit=3,
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    system = start_inventory(settings)
    seed_catalogue(system.api())
    stop = threading.Event()
    worker = bootstrap.create_worker("inventory", settings, service=system.service)
    worker.start(stop)
    wait_until(worker.consumer.connected.is_set, timeout=20, message="consumer connected")
    system.worker = worker  # type: ignore[attr-defined]
    yield system
    stop.set()
    worker.join(timeout=20)
    system.service.db.dispose()


def receive(system: InventoryUnderTest, part: str, warehouse: str, quantity: int) -> None:
    body = {"warehouse": warehouse, "part_number": part, "quantity": quantity}
    if part == "XRT-2000":
        body["serials"] = [f"{warehouse}-{uuid.uuid4().hex[:8]}" for _ in range(quantity)]
    reply = system.api().post(f"{V1}/receipts", body)
    assert reply.status == 201, reply


def assert_books_balance(system: InventoryUnderTest) -> None:
    for row in system.service.ledger_balances():
        assert row["on_hand"] == row["ledger_on_hand"], row
        assert row["reserved"] == row["ledger_reserved"], row
        assert 0 <= row["reserved"] <= row["on_hand"], row


def assert_no_unit_held_twice(system: InventoryUnderTest) -> None:
    with system.service.db.reading() as session:
        held = session.execute(
            select(ReservationUnit.serial, func.count())
            .join(Reservation, Reservation.id == ReservationUnit.reservation_id)
            .where(Reservation.status.in_(("confirmed", "issued")))
            .group_by(ReservationUnit.serial)
            .having(func.count() > 1)
        ).all()
    assert held == []


def _fire(args: tuple[str, str, int, str]) -> list[int]:
    """One client process: 50 reservations at once from its own threads."""
    base_url, token, count, label = args
    body = reservation_body(part_number="XRT-2000", warehouse="CDU")

    def one(i: int) -> int:
        payload = dict(body, job_id=f"{label}-{i}")
        return requests.post(
            f"{base_url}{V1}/reservations",
            data=json.dumps(payload),
            headers=json_headers(token),
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


class TestConcurrentReservationsOverHttp:
    def test_200_clients_5_units_exactly_5_confirmed(self, pg_inventory, tmp_path) -> None:
        system = pg_inventory
        receive(system, "XRT-2000", "CDU", 5)
        env = environment(system.settings)
        servers, urls = [], []
        for n in range(2):
            port = free_port()
            process = partsflow(
                "web",
                "inventory",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "3",
                env=env,
                log=tmp_path / f"web-{n}.log",
            )
            servers.append(process)
            urls.append(f"http://127.0.0.1:{port}")
        try:
            for url, process in zip(urls, servers, strict=True):
                wait_for_http(f"{url}/inventory/healthz", process)
            token = system.tokens["service"]
            jobs = [(urls[i % 2], token, 50, f"P{i}") for i in range(4)]
            with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
                statuses = Counter(s for batch in pool.map(_fire, jobs) for s in batch)
        finally:
            for process in servers:
                process.stop()
        assert statuses == {201: 5, 409: 195}
        stock = system.api().get(f"{V1}/stock", part_number="XRT-2000", warehouse="CDU").body[0]
        assert (stock["on_hand"], stock["reserved"], stock["available"]) == (5, 5, 0)
        assert_books_balance(system)
        assert_no_unit_held_twice(system)

    def test_two_requests_for_8_of_10_exactly_one_wins(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        barrier = threading.Barrier(2)

        def attempt(job: str) -> int:
            client = system.app.test_client()
            barrier.wait()
            return client.post(
                f"{V1}/reservations",
                json=reservation_body(job_id=job, part_number="GEL-250", quantity=8),
                headers={"Authorization": f"Bearer {system.tokens['service']}"},
            ).status_code

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(attempt, ["A", "B"])) == [201, 409]
        assert_books_balance(system)

    def test_two_first_receipts_at_once_leave_the_low_stock_signal_right(
        self, pg_inventory
    ) -> None:
        system = pg_inventory
        api = system.api()
        lines = [(f"FLT-{i}", warehouse) for i in range(15) for warehouse in ("CDU", "SHA")]
        for part in {part for part, _ in lines}:
            body = {"part_number": part, "description": "Filter", "serialized": False}
            assert api.post(f"{V1}/parts", {**body, "reorder_point": 10}).status == 201

        def receive_at_once(line: tuple[str, str]) -> None:
            part, warehouse = line
            barrier = threading.Barrier(2)

            def one(quantity: int) -> int:
                barrier.wait()
                return (
                    system.app.test_client()
                    .post(
                        f"{V1}/receipts",
                        json={"warehouse": warehouse, "part_number": part, "quantity": quantity},
                        headers={"Authorization": f"Bearer {system.tokens['logistics']}"},
                    )
                    .status_code
                )

            with ThreadPoolExecutor(2) as pool:
                assert list(pool.map(one, [3, 20])) == [201, 201]

        for line in lines:
            receive_at_once(line)
        # 23 on hand against a reorder point of 10: the last word on every line is that
        # it is not low (nothing at all, or "low" then "replenished").
        with system.service.db.reading() as session:
            outbox = system.service.db.bus.outbox
            signals = session.execute(
                select(outbox.c.routing_key, outbox.c.body)
                .where(outbox.c.routing_key.like("inventory.stock.%"))
                .order_by(outbox.c.id)
            ).all()
        last: dict[str, str] = {}
        for key, body in signals:
            if key in ("inventory.stock.low", "inventory.stock.replenished"):
                last[json.loads(body)["subject"]] = key
        stuck = sorted(subject for subject, key in last.items() if key == "inventory.stock.low")
        assert stuck == []

    @pytest.mark.parametrize("on_hand", [20, 1])
    def test_one_request_id_sent_by_eight_senders_at_once_reserves_once(
        self, pg_inventory, on_hand: int
    ) -> None:
        # A command's request_id (the bus's retry key) arriving on eight threads at once;
        # with one unit, the other seven find the shelf empty, yet the request succeeded.
        system = pg_inventory
        receive(system, "GEL-250", "CDU", on_hand)
        command = ReserveCommand().load(
            reservation_body(job_id="J-once", part_number="GEL-250", request_id="once-1")
        )
        barrier = threading.Barrier(8)

        def attempt(_: int) -> str:
            barrier.wait()
            return system.service.reserve_part(command)["id"]

        with ThreadPoolExecutor(8) as pool:
            assert len(set(pool.map(attempt, range(8)))) == 1
        stock = system.api().get(f"{V1}/stock", part_number="GEL-250", warehouse="CDU").body[0]
        assert (stock["on_hand"], stock["reserved"]) == (on_hand, 1)
        assert_books_balance(system)


class TestOutsideListeners:
    def test_a_listener_declares_the_exchanges_as_the_contract_names_them(
        self, pg_inventory
    ) -> None:
        """A control tower declares `<prefix>.events` and `<prefix>.commands` as topic
        and durable, with no arguments, binds its queue and hears the events."""
        from kombu import Connection, Exchange, Queue

        system = pg_inventory
        prefix = system.settings.bus_prefix
        heard = f"{prefix}.control-tower"
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            channel = conn.channel()
            for name in ("events", "commands"):
                Exchange(f"{prefix}.{name}", type="topic", durable=True)(channel).declare()
            Queue(
                heard,
                exchange=Exchange(f"{prefix}.events", type="topic", durable=True),
                routing_key="inventory.stock.#",
                durable=True,
            )(channel).declare()
            try:
                receive(system, "GEL-250", "CDU", 3)
                queue = Queue(heard, no_declare=True)(channel)
                message = wait_until(
                    lambda: queue.get(no_ack=True), timeout=20, message="the receipt's event"
                )
                assert json.loads(message.body)["type"] == "inventory.stock.received"
                # The services declare them again (a restart) without a quarrel.
                bootstrap.bus_topology(system.settings).declare(conn)
            finally:
                channel.queue_delete(heard)

    def test_an_events_exchange_an_earlier_version_made_is_taken_as_it_is(
        self, rabbitmq, tmp_path: Path
    ) -> None:
        from kombu import Connection, Exchange, Queue

        settings = make_settings(tmp_path, broker_url=AMQP_URL, bus_prefix=rabbitmq.prefix("old"))
        topology = bootstrap.bus_topology(settings)
        rabbitmq.track(topology)
        prefix = settings.bus_prefix
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            channel = conn.channel()
            Exchange(
                f"{prefix}.events",
                type="topic",
                durable=True,
                arguments={"alternate-exchange": f"{prefix}.unrouted"},
            )(channel).declare()
            # Every worker declares it at start; the second time as the first.
            topology.declare(conn)
            topology.declare(conn)
            producer = conn.Producer(channel)
            producer.publish(
                b"{}",
                exchange=f"{prefix}.events",
                routing_key="shipments.shipment.dispatched",
                retry=False,
            )
            queue = Queue(f"{prefix}.inventory.events", no_declare=True)(channel)
            message = wait_until(
                lambda: queue.get(no_ack=True), timeout=20, message="the event routed"
            )
            assert message.body == b"{}"


class TestReserveCommands:
    def test_200_commands_5_units_exactly_5_confirmed(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "XRT-2000", "CDU", 5)
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            sent = [
                client.command(
                    "inventory.reserve",
                    reservation_body(job_id=f"BUS-{i}", warehouse="CDU"),
                )
                for i in range(200)
            ]
            replies = client.collect_replies(lambda r: len(r) >= 200, timeout=60)
        finally:
            client.close()
        kinds = Counter(r["type"] for r in replies)
        assert kinds == {
            "inventory.reservation.confirmed": 5,
            "inventory.reservation.rejected": 195,
        }
        assert {r["correlationid"] for r in replies} == set(sent)
        assert_books_balance(system)
        assert_no_unit_held_twice(system)

    def test_background_work_waits_while_a_command_is_in_hand(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        consumer = system.worker.consumer
        assert consumer.wait_until_quiet(5)
        database = system.service.db.engine.url.set(drivername="postgresql")
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            with psycopg.connect(database.render_as_string(hide_password=False)) as blocker:
                # The stock row locked elsewhere: the command's reservation waits on it.
                blocker.execute("SELECT * FROM stock FOR UPDATE")
                client.command("inventory.reserve", reservation_body(part_number="GEL-250"))
                wait_until(lambda: not consumer.wait_until_quiet(0), timeout=20)
                assert not consumer.wait_until_quiet(0.3)
            replies = client.collect_replies(lambda r: len(r) >= 1, timeout=20)
        finally:
            client.close()
        assert replies[0]["type"] == "inventory.reservation.confirmed"
        assert consumer.wait_until_quiet(10)

    def test_the_same_command_twice_is_applied_once(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            command_id = str(uuid.uuid4())
            body = reservation_body(part_number="GEL-250", quantity=3, warehouse="CDU")
            client.command("inventory.reserve", body, message_id=command_id)
            client.command("inventory.reserve", body, message_id=command_id)
            client.collect_replies(lambda r: len(r) >= 1, timeout=20)
            wait_until(
                lambda: system.worker.consumer.stats.duplicates >= 1,
                timeout=20,
                message="the repeat to be seen",
            )
        finally:
            client.close()
        assert len(client.replies) == 1
        stock = system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]
        assert stock["reserved"] == 3
        assert len(system.api().get(f"{V1}/reservations").body) == 1

    def test_a_command_sent_again_is_answered_again_to_its_new_queue_alone(
        self, pg_inventory
    ) -> None:
        """The sender lost its answer with the connection its reply queue lived on:
        the command again, to a new queue, is answered there; listeners on the events
        exchange heard of the reservation once."""
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        prefix = system.settings.bus_prefix
        command_id = str(uuid.uuid4())
        body = reservation_body(part_number="GEL-250", warehouse="CDU")
        listener = BusClient(AMQP_URL, prefix).open()
        clients = [BusClient(AMQP_URL, prefix).open() for _ in range(2)]
        try:
            tap = listener.tap("inventory.reservation.#")
            for client in clients:
                client.command("inventory.reserve", body, message_id=command_id)
                client.collect_replies(lambda r: len(r) >= 1, timeout=20)
            later = listener.command(
                "inventory.reserve", reservation_body(part_number="GEL-250", job_id="J-LATER")
            )
            heard = heard_until(listener, tap, later)
        finally:
            for client in (listener, *clients):
                client.close()
        first, again = (client.replies[0] for client in clients)
        assert first == again and first["correlationid"] == command_id
        assert [e["id"] for e in heard if e["correlationid"] == command_id] == [first["id"]]

    def test_a_new_command_repeating_a_request_id_is_answered_with_the_first(
        self, pg_inventory
    ) -> None:
        system = pg_inventory
        body = reservation_body(part_number="GEL-250", quantity=3, warehouse="CDU")
        body["request_id"] = "field-service-req-77"
        listener = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            tap = listener.tap("inventory.reservation.#")
            answers, first, again = reserve_twice(system, body, body)
            # A later change, published after anything the repeat could have sent.
            later = listener.command(
                "inventory.reserve", reservation_body(part_number="GEL-250", job_id="J-LATER")
            )
            heard = heard_until(listener, tap, later)
        finally:
            listener.close()
        assert (
            answers[first]["type"] == answers[again]["type"] == ("inventory.reservation.confirmed")
        )
        assert answers[again]["data"]["id"] == answers[first]["data"]["id"]
        assert answers[again]["data"]["repeat"] is True
        assert system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 3 + 1
        # Everyone else heard of the reservation once: the repeat went to its sender.
        assert [
            e["correlationid"] for e in heard if e["data"]["id"] == answers[first]["data"]["id"]
        ] == [first]

    def test_a_request_id_asking_for_something_else_is_rejected(self, pg_inventory) -> None:
        system = pg_inventory
        body = reservation_body(part_number="GEL-250", quantity=3, warehouse="CDU")
        body["request_id"] = "field-service-req-78"
        answers, first, other = reserve_twice(system, body, {**body, "quantity": 5})
        assert answers[first]["type"] == "inventory.reservation.confirmed"
        refused = answers[other]
        assert refused["type"] == "inventory.reservation.rejected"
        assert refused["data"]["reason"] == "validation-error"
        assert refused["data"]["errors"] == {
            "request_id": ["already used for a different reservation"]
        }
        assert "quantity" in refused["data"]["detail"]
        assert system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 3

    def test_a_command_sent_again_under_its_id_is_answered_again(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            body = reservation_body(part_number="GEL-250", quantity=2, warehouse="CDU")
            command_id = client.command("inventory.reserve", body)
            client.collect_replies(lambda r: len(r) >= 1, timeout=20)
            invalid_id = client.command("inventory.reserve", {"job_id": "J", "quantity": -1})
            client.collect_replies(lambda r: len(r) >= 2, timeout=20)
            # The sender lost both answers and sends the same commands again.
            client.command("inventory.reserve", body, message_id=command_id)
            client.command(
                "inventory.reserve", {"job_id": "J", "quantity": -1}, message_id=invalid_id
            )
            replies = client.collect_replies(lambda r: len(r) >= 4, timeout=20)
        finally:
            client.close()
        first, again = [r for r in replies if r["correlationid"] == command_id]
        assert first == again  # the same event, by its id too
        assert first["type"] == "inventory.reservation.confirmed"
        assert [r["type"] for r in replies if r["correlationid"] == invalid_id] == [
            "inventory.reservation.rejected"
        ] * 2
        # Reserved once.
        assert system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 2

    def test_a_command_sent_again_from_a_new_reply_queue_is_answered_there(
        self, pg_inventory
    ) -> None:
        # The sender's connection died, and its exclusive reply queue with it; after
        # reconnecting it sends the same commands again, each to its new reply queue.
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 10)
        body = reservation_body(part_number="GEL-250", quantity=2, warehouse="CDU")
        lost = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            asked = lost.command("inventory.reserve", body)
            lost.collect_replies(lambda r: len(r) >= 1, timeout=20)
            unasked = lost.command("inventory.release", {"reservation_id": "nope"}, reply=False)
            wait_until(
                lambda: (
                    system.worker.consumer.stats.rejected + system.worker.consumer.stats.applied
                    >= 2
                ),
                timeout=20,
                message="both commands to be handled",
            )
        finally:
            lost.close()
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            client.command("inventory.reserve", body, message_id=asked)
            client.command("inventory.release", {"reservation_id": "nope"}, message_id=unasked)
            replies = client.collect_replies(lambda r: len(r) >= 2, timeout=20)
        finally:
            client.close()
        answers = {r["correlationid"]: r for r in replies}
        assert answers[asked]["type"] == "inventory.reservation.confirmed"
        assert answers[asked] == lost.replies[0]
        assert answers[unasked]["type"] == "inventory.release.rejected"
        assert system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 2

    def test_release_command_answers_with_the_released_reservation(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 2)
        reservation = (
            system.api()
            .post(f"{V1}/reservations", reservation_body(part_number="GEL-250", quantity=2))
            .body
        )
        client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
        try:
            client.command("inventory.release", {"reservation_id": reservation["id"]})
            client.command("inventory.release", {"reservation_id": "no-such-id"})
            replies = client.collect_replies(lambda r: len(r) >= 2, timeout=20)
        finally:
            client.close()
        by_type = {r["type"]: r for r in replies}
        assert by_type["inventory.reservation.released"]["data"]["id"] == reservation["id"]
        assert by_type["inventory.release.rejected"]["data"]["reason"] == "not-found"
        assert system.api().get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 0


class TestBadMessages:
    def test_invalid_command_data_is_answered_rejected(self, pg_inventory) -> None:
        client = BusClient(AMQP_URL, pg_inventory.settings.bus_prefix).open()
        try:
            command_id = client.command(
                "inventory.reserve", {"job_id": "J", "request_id": "req-9", "quantity": -1}
            )
            off_calendar = client.command(
                "inventory.reserve",
                reservation_body(part_number="GEL-250", required_by="9999-12-31T23:59:59-01:00"),
            )
            with_nul = client.command(
                "inventory.reserve", reservation_body(part_number="GEL-250", owner="li\x00wei")
            )
            # Its id only in the envelope, as many senders publish.
            nul_envelope = make_envelope(
                "inventory.reserve",
                source="field-service/test",
                data=reservation_body(part_number="GEL-250", job_id="J\x00"),
            )
            client.publish_raw(
                json.dumps(nul_envelope).encode(), type="inventory.reserve", message_id=None
            )
            replies = client.collect_replies(lambda r: len(r) >= 4, timeout=20)
        finally:
            client.close()
        answers = {r["correlationid"]: r for r in replies}
        assert answers[nul_envelope["id"]]["type"] == "inventory.reservation.rejected"
        reply = answers[command_id]
        assert reply["type"] == "inventory.reservation.rejected"
        assert "quantity" in reply["data"]["errors"]
        assert reply["data"]["reason"] == "validation-error"
        assert (reply["data"]["request_id"], reply["data"]["job_id"]) == ("req-9", "J")
        assert answers[off_calendar]["type"] == "inventory.reservation.rejected"
        assert "required_by" in answers[off_calendar]["data"]["errors"]
        assert answers[with_nul]["type"] == "inventory.reservation.rejected"

    def test_nul_is_refused_before_postgresql_sees_it(self, pg_inventory) -> None:
        api = pg_inventory.api()
        reply = api.post(
            f"{V1}/reservations", reservation_body(part_number="GEL-250", owner="li\x00wei")
        )
        assert reply.status == 422
        assert api.get(f"{V1}/reservations", job_id="J\x00").status == 422
        assert api.get(f"{V1}/reservations/abc%00").status == 404

    def test_malformed_body_goes_to_dead_letters_and_work_goes_on(self, pg_inventory) -> None:
        system = pg_inventory
        receive(system, "GEL-250", "CDU", 5)
        prefix = system.settings.bus_prefix
        client = BusClient(AMQP_URL, prefix).open()
        try:
            client.publish_raw(b"\x00 not json", type="inventory.reserve", message_id="junk-1")
            client.publish_raw(
                json.dumps({"id": "half-1", "type": "inventory.reserve"}).encode(),
                type="inventory.reserve",
                message_id="half-1",
            )
            client.command("inventory.reserve", reservation_body(part_number="GEL-250"))
            replies = client.collect_replies(
                lambda r: (
                    any(x["type"] == "inventory.reservation.confirmed" for x in r)
                    and {"half-1", "junk-1"} <= {x["correlationid"] for x in r}
                ),
                timeout=20,
            )
            dead = dead_letters(client, prefix, 2)
        finally:
            client.close()
        assert sorted(m.properties.get("message_id") for m in dead) == ["half-1", "junk-1"]
        # Both had an id to answer to: the envelope's, or only the AMQP message's.
        for command_id in ("half-1", "junk-1"):
            [rejected] = [r for r in replies if r["correlationid"] == command_id]
            assert rejected["type"] == "inventory.reservation.rejected"

    def test_a_message_nobody_could_answer_or_take_is_dead_lettered_and_told(
        self, pg_inventory
    ) -> None:
        system = pg_inventory
        prefix = system.settings.bus_prefix
        receive(system, "GEL-250", "CDU", 5)
        client = BusClient(AMQP_URL, prefix).open()

        def envelope(**changes: Any) -> bytes:
            body = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "field-service/test",
                "type": "inventory.reserve",
                "data": reservation_body(part_number="GEL-250", job_id="J-BLANK"),
            }
            return json.dumps({**body, **changes}).encode()

        try:
            # No usable id anywhere: two of them, so that a first recorded as applied
            # would make the second vanish as its repeat.
            for _ in range(2):
                client.publish_raw(envelope(id=""), type="inventory.reserve", message_id=None)
            client.publish_raw(envelope(id="x" * 65), type="inventory.reserve", message_id=None)
            unknown = str(uuid.uuid4())
            client.publish_raw(
                envelope(id=unknown, type="inventory.frobnicate"),
                type="inventory.reserve",
                message_id=unknown,
            )
            replies = client.collect_replies(lambda r: len(r) >= 1, timeout=20)
            dead = dead_letters(client, prefix, 4)
        finally:
            client.close()
        (answer,) = replies
        assert (answer["correlationid"], answer["type"]) == (
            unknown,
            "inventory.reservation.rejected",
        )
        assert answer["data"]["errors"] == {
            "type": ["inventory.frobnicate is not a command this service takes"]
        }
        assert len(dead) == 4
        assert system.api().get(f"{V1}/reservations", job_id="J-BLANK").body == []

    def test_an_event_sent_as_a_command_is_refused_and_changes_nothing(self, pg_inventory) -> None:
        """Outside systems write to the commands exchange: one that dresses a
        shipment's dispatch up as a command must not take stock off the shelf."""
        system = pg_inventory
        prefix = system.settings.bus_prefix
        receive(system, "GEL-250", "CDU", 5)
        reservation = (
            system.api()
            .post(
                f"{V1}/reservations",
                reservation_body(part_number="GEL-250", warehouse="CDU", job_id="J-FAKE"),
            )
            .body
        )
        shipment = {
            "id": str(uuid.uuid4()),
            "status": "in_transit",
            "origin": "CDU",
            "destination": reservation["site"],
            "mode": "hand_carry",
            "lines": [
                {"part_number": "GEL-250", "quantity": 1, "reservation_id": reservation["id"]}
            ],
            "dispatched_at": "2026-11-20T06:00:00+00:00",
            "version": 2,
        }
        client = BusClient(AMQP_URL, prefix).open()
        try:
            sent = []
            for routing_key in ("inventory.reserve", "inventory.release"):
                dispatched = make_envelope(
                    "shipments.shipment.dispatched", source="outside/test", data=shipment
                )
                client.publish_raw(
                    json.dumps(dispatched).encode(),
                    type=routing_key,
                    message_id=dispatched["id"],
                )
                sent.append(dispatched["id"])
            replies = client.collect_replies(lambda r: len(r) >= 2, timeout=20)
            dead = dead_letters(client, prefix, 2)
            assert len(dead) == 2
            assert sorted(r["type"] for r in replies) == [
                "inventory.release.rejected",
                "inventory.reservation.rejected",
            ]
            assert sorted(r["correlationid"] for r in replies) == sorted(sent)
            reservation_now = f"{V1}/reservations/{reservation['id']}"
            assert system.api().get(reservation_now).body["status"] == "confirmed"
            stock_now = {"part_number": "GEL-250", "warehouse": "CDU"}
            (stock,) = system.api().get(f"{V1}/stock", **stock_now).body
            assert (stock["on_hand"], stock["reserved"]) == (5, 1)
            # The copy refused was not that event: the event itself, sent the way
            # events go, is applied.
            client.publish_raw(
                json.dumps(dispatched).encode(),
                type="shipments.shipment.dispatched",
                message_id=dispatched["id"],
                reply=False,
                exchange="events",
            )
            wait_until(
                lambda: system.api().get(reservation_now).body["status"] == "issued",
                timeout=20,
                message="the dispatch applied",
            )
        finally:
            client.close()
        (stock,) = system.api().get(f"{V1}/stock", **stock_now).body
        assert (stock["on_hand"], stock["reserved"]) == (4, 0)

    def test_poison_message_is_dead_lettered_after_the_delivery_limit(
        self, pg_inventory, monkeypatch
    ) -> None:
        system = pg_inventory
        prefix = system.settings.bus_prefix
        receive(system, "GEL-250", "CDU", 5)
        failures = Counter()
        real_reserve = system.service.reserve_part

        def reserve_or_crash(data, **kwargs):
            if data["job_id"] == "POISON":
                failures["poison"] += 1
                raise RuntimeError("a bug that hits this job every time")
            return real_reserve(data, **kwargs)

        monkeypatch.setattr(system.service, "reserve_part", reserve_or_crash)
        client = BusClient(AMQP_URL, prefix).open()
        try:
            client.command(
                "inventory.reserve", reservation_body(job_id="POISON", part_number="GEL-250")
            )
            client.command(
                "inventory.reserve", reservation_body(job_id="OK", part_number="GEL-250")
            )
            client.collect_replies(lambda r: len(r) >= 1, timeout=20)
            dead = wait_until(
                lambda: client.drain_queue(f"{prefix}.inventory.dead") or None,
                timeout=30,
                message="the poison message in the dead-letter queue",
            )
        finally:
            client.close()
        assert [r["data"]["job_id"] for r in client.replies] == ["OK"]
        assert len(dead) == 1
        assert json.loads(dead[0].body)["data"]["job_id"] == "POISON"
        assert failures["poison"] == system.settings.delivery_limit


def reserve_twice(
    system: InventoryUnderTest, first_body: dict, second_body: dict
) -> tuple[dict[str, dict], str, str]:
    """Ten GEL-250 at CDU, then two reserve commands, the second sent once the first is
    answered: the answers by command id, and the two ids."""
    receive(system, "GEL-250", "CDU", 10)
    client = BusClient(AMQP_URL, system.settings.bus_prefix).open()
    try:
        first = client.command("inventory.reserve", first_body)
        client.collect_replies(lambda r: len(r) >= 1, timeout=20)
        second = client.command("inventory.reserve", second_body)
        replies = client.collect_replies(lambda r: len(r) >= 2, timeout=20)
    finally:
        client.close()
    return {r["correlationid"]: r for r in replies}, first, second


def heard_until(listener: BusClient, tap: str, command_id: str) -> list[dict]:
    """The events a listener's queue heard, up to the one ``command_id`` caused: what
    was published before that event has arrived by then."""
    heard: list[dict] = []
    wait_until(
        lambda: (
            heard.extend(json.loads(m.body) for m in listener.drain_queue(tap))
            or any(e["correlationid"] == command_id for e in heard)
        ),
        timeout=20,
        message=f"the event of command {command_id}",
    )
    return heard


def dead_letters(client: BusClient, prefix: str, count: int) -> list[Any]:
    """Inventory's dead letters, once ``count`` of them have come."""
    dead: list[Any] = []
    wait_until(
        lambda: dead.extend(client.drain_queue(f"{prefix}.inventory.dead")) or len(dead) >= count,
        timeout=20,
        message=f"{count} dead letters",
    )
    return dead


class TestDroppedDatabaseConnections:
    """The server drops every connection (a restart, a failover): a pooled connection
    idle for a while is checked before use; one caught in use answers 503, not 500.
    The web app alone holds the pool here: a worker sharing it could find a dead
    connection first, and its failure renews the whole pool."""

    @pytest.fixture
    def web_only(self, postgres, tmp_path: Path) -> Iterator[InventoryUnderTest]:
        settings = make_settings(tmp_path, inventory_db_url=postgres.create("inventory"))
        system = start_inventory(settings)
        seed_catalogue(system.api())
        receive(system, "GEL-250", "CDU", 10)
        yield system
        system.service.db.dispose()

    @staticmethod
    def drop_connections(system: InventoryUnderTest) -> int:
        database = system.service.db.engine.url.database
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            return len(
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
            )

    def reserve(self, system: InventoryUnderTest, job: str, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {system.tokens['service']}"}
        if key:
            headers["Idempotency-Key"] = key
        return system.app.test_client().post(
            f"{V1}/reservations",
            json=reservation_body(job_id=job, part_number="GEL-250"),
            headers=headers,
        )

    def test_an_idle_connection_is_replaced_before_use(self, web_only) -> None:
        system = web_only
        assert self.reserve(system, "J-before").status_code == 201
        assert self.drop_connections(system) > 0
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # the idleness the check waits for
        assert self.reserve(system, "J-after").status_code == 201
        assert_books_balance(system)

    def test_a_connection_dropped_while_busy_answers_503_then_recovers(
        self, web_only, monkeypatch
    ) -> None:
        system = web_only
        monkeypatch.setattr(shared_db, "PING_AFTER_IDLE_SECONDS", 3600.0)
        assert self.reserve(system, "J-before").status_code == 201
        assert self.drop_connections(system) > 0
        answer = self.reserve(system, "J-dropped")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert answer.get_json()["title"] == "Service Unavailable"
        assert self.reserve(system, "J-again").status_code == 201
        jobs = {r["job_id"] for r in system.api().get(f"{V1}/reservations").body}
        assert jobs == {"J-before", "J-again"}
        assert_books_balance(system)

    def test_a_connection_lost_at_commit_is_not_answered_as_safe_to_retry(
        self, web_only, monkeypatch
    ) -> None:
        system = web_only
        write_pending = Transaction.write_pending

        def write_then_lose_the_connection(tx: Transaction) -> None:
            write_pending(tx)
            if not tx.outbox_rows:  # the Idempotency-Key's own record goes through
                return
            backend = tx.session.connection().connection.driver_connection.info.backend_pid
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))

        monkeypatch.setattr(Transaction, "write_pending", write_then_lose_the_connection)
        answer = self.reserve(system, "J-in-doubt", key="doubt-1")
        monkeypatch.undo()
        # The COMMIT never got an answer: the client is not told a retry is safe, and
        # the same key is not run a second time while the outcome is unknown.
        assert answer.status_code == 500
        assert "Retry-After" not in answer.headers
        assert self.reserve(system, "J-in-doubt", key="doubt-1").status_code == 409
        assert self.reserve(system, "J-after").status_code == 201
        assert_books_balance(system)
