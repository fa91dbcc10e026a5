"""The production shape on this machine's PostgreSQL and RabbitMQ: every web server
under gunicorn, every worker, and the gateway, each its own process, started from
`partsflow stack`'s plan (deploy/Procfile). Users work through the gateway over
HTTP; a field-service system works over the bus; a worker dies by SIGKILL and
nothing is lost."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from kombu import Connection, Exchange, Queue

from services import bootstrap, stack
from shared.config import SERVICES
from tests.busclient import BusClient
from tests.conftest import AMQP_URL, make_settings, wait_until
from tests.processes import Process, environment, free_port
from tests.support import Reply, make_tokens, reservation_body, seed_catalogue

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]
INV = "/inventory/api/v1"


class GatewayApi:
    """JSON calls over real HTTP through the gateway, as one user; answers are the
    :class:`Reply` of the in-process tests, so the same helpers serve both."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> Reply:
        return self._reply(self.session.get(self.base_url + path, params=params, timeout=30))

    def post(self, path: str, body: Any = None) -> Reply:
        return self._reply(self.session.post(self.base_url + path, json=body, timeout=30))

    @staticmethod
    def _reply(response: requests.Response) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Reply(response.status_code, body, dict(response.headers))


class RunningStack:
    """The plan's processes, each started on its own so that one can be killed."""

    def __init__(self, plan: stack.StackPlan, logs: Path) -> None:
        self.plan = plan
        self.logs = logs
        self.processes: dict[str, Process] = {}

    def start(self, name: str) -> None:
        process = self.plan.process(name)
        self.processes[name] = Process(
            ["/bin/sh", "-c", process.command], dict(process.env), self.logs / f"{name}.log"
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill(signal.SIGKILL)
        process.stop()  # it is dead already: this closes its log

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def output(self) -> str:
        return "\n".join(
            f"--- {name}\n{process.output()[-2000:]}" for name, process in self.processes.items()
        )

    def consumers(self, service: str) -> int:
        """How many consumers RabbitMQ sees on the fewest-served of the service's work
        queues (none before its worker has declared them)."""
        topology = bootstrap.bus_topology(self.plan.settings)
        counts = []
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            for spec in topology.queues_of(service):
                try:
                    declared = conn.default_channel.queue_declare(
                        topology.queue_name(spec), passive=True
                    )
                except conn.channel_errors:
                    return 0
                counts.append(declared.consumer_count)
        return min(counts, default=0)

    def wait_for_consumers(self, service: str) -> None:
        wait_until(
            lambda: self.consumers(service) > 0,
            timeout=60,
            interval=0.2,
            message=f"the {service} worker to consume\n{self.output()}",
        )


def probes_answer(base_url: str) -> bool:
    try:
        return all(
            requests.get(f"{base_url}/{service}/{probe}", timeout=5).status_code == 200
            for service in SERVICES
            for probe in ("healthz", "readyz", "metrics")
        )
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def running(postgres, rabbitmq, tmp_path_factory) -> Iterator[RunningStack]:
    data_dir = tmp_path_factory.mktemp("stack")
    settings = make_settings(
        data_dir,
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("stack"),
        # The alert scheduler looks often, so that the test waits seconds, not minutes.
        tracking_scan_seconds=1,
        **{f"{service}_db_url": postgres.create(service) for service in SERVICES},
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    # JSON logs at INFO, as in production: one test follows a request through them.
    environ = environment(settings, PARTSFLOW_LOG_LEVEL="INFO", PARTSFLOW_LOG_FORMAT="json")
    plan = stack.plan_stack(settings, environ=environ, port=free_port(), web_port=0)
    assert stack.ensure_databases(settings) == []
    stack.run_release(plan)
    system = RunningStack(plan, data_dir)
    try:
        for process in plan.processes:
            system.start(process.name)
        wait_until(
            lambda: probes_answer(plan.gateway_url),
            timeout=90,
            interval=0.25,
            message=f"every probe through the gateway\n{system.output()}",
        )
        for service in SERVICES:
            system.wait_for_consumers(service)
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def tokens(running: RunningStack) -> dict[str, str]:
    return make_tokens(running.plan.settings)


@pytest.fixture(scope="module")
def logistics(running: RunningStack, tokens) -> GatewayApi:
    api = GatewayApi(running.plan.gateway_url, tokens["logistics"])
    seed_catalogue(api)
    return api


def as_user(running: RunningStack, tokens: dict[str, str], role: str) -> GatewayApi:
    return GatewayApi(running.plan.gateway_url, tokens[role])


def receive(api: GatewayApi, part: str, warehouse: str, quantity: int) -> None:
    body: dict[str, Any] = {"warehouse": warehouse, "part_number": part, "quantity": quantity}
    if part == "XRT-2000":
        body["serials"] = [f"{warehouse}-{uuid.uuid4().hex[:8]}" for _ in range(quantity)]
    reply = api.post(f"{INV}/receipts", body)
    assert reply.status == 201, reply


def stock_of(api: GatewayApi, part: str, warehouse: str) -> dict[str, Any]:
    [row] = api.get(f"{INV}/stock", part_number=part, warehouse=warehouse).body
    return row


def outbox_unsent(base_url: str) -> float:
    metrics = requests.get(f"{base_url}/inventory/metrics", timeout=10).text
    [line] = [line for line in metrics.splitlines() if line.startswith("partsflow_outbox_unsent")]
    return float(line.split()[-1])


class TestThroughTheGateway:
    def test_every_service_answers_its_probes_on_one_port(self, running) -> None:
        base = running.plan.gateway_url
        for service in SERVICES:
            health = requests.get(f"{base}/{service}/healthz", timeout=10)
            assert health.json() == {"status": "ok", "service": service}
            ready = requests.get(f"{base}/{service}/readyz", timeout=10).json()
            assert ready["status"] == "ready"
            assert set(ready["checks"].values()) == {"ok"}
            metrics = requests.get(f"{base}/{service}/metrics", timeout=10)
            assert metrics.headers["Content-Type"].startswith("text/plain")
            assert "partsflow_outbox_unsent" in metrics.text
        # Pages outside the prefixes are tracking's: its sign-in form.
        login = requests.get(f"{base}/login", timeout=10)
        assert login.status_code == 200
        assert "<form" in login.text

    def test_staff_receive_and_reserve_a_tube_over_http(self, running, logistics) -> None:
        receive(logistics, "XRT-2000", "CDU", 2)
        reply = logistics.post(
            f"{INV}/reservations", reservation_body(job_id="JOB-1042", warehouse="CDU")
        )
        assert reply.status == 201, reply
        reservation = reply.body
        assert (reservation["status"], reservation["warehouse"]) == ("confirmed", "CDU")
        assert len(reservation["serials"]) == 1
        shown = logistics.get(f"{INV}/reservations/{reservation['id']}")
        assert shown.status == 200
        assert shown.body["serials"] == reservation["serials"]
        stock = stock_of(logistics, "XRT-2000", "CDU")
        assert (stock["on_hand"], stock["reserved"], stock["available"]) == (2, 1, 1)

    def test_one_request_id_is_followed_through_the_logs_of_every_service(
        self, running, logistics
    ) -> None:
        # A part of its own, so that other tests' counts of their parts stay theirs.
        part = {"part_number": "FUSE-10A", "description": "Fuse", "serialized": False}
        assert logistics.post(f"{INV}/parts", part).status in (201, 409)
        receive(logistics, "FUSE-10A", "CDU", 5)
        trace = f"trace-{uuid.uuid4().hex[:8]}"
        reply = requests.post(
            f"{logistics.base_url}{INV}/reservations",
            json=reservation_body(job_id=f"JOB-{trace}", part_number="FUSE-10A", warehouse="CDU"),
            headers={**logistics.session.headers, "X-Request-ID": trace},
            timeout=30,
        )
        assert reply.status_code == 201, reply.text
        assert reply.headers["X-Request-ID"] == trace

        def lines(name: str) -> list[dict[str, Any]]:
            found = []
            for line in running.processes[name].output().splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if trace in (record.get("request_id"), record.get("correlation_id")):
                        found.append(record)
            return found

        wait_until(
            lambda: lines("shipments-worker") and lines("tracking-worker"),
            timeout=30,
            message=f"the workers to log the reservation's messages\n{running.output()}",
        )
        (request,) = [r for r in lines("inventory-web") if r["event"] == "request"]
        assert (request["status"], request["path"]) == (201, f"{INV}/reservations")
        for worker in ("shipments-worker", "tracking-worker"):
            applied = [r for r in lines(worker) if r["event"] == "message applied"]
            assert "inventory.reservation.confirmed" in {r["message_type"] for r in applied}

    def test_a_field_service_system_reserves_over_the_bus_and_gets_its_answer(
        self, running, logistics
    ) -> None:
        receive(logistics, "XRT-2000", "SHA", 1)
        client = BusClient(AMQP_URL, running.plan.settings.bus_prefix).open()
        try:
            command_id = client.command(
                "inventory.reserve", reservation_body(job_id="FS-77", warehouse="SHA")
            )
            [answer] = client.collect_replies(lambda replies: len(replies) >= 1, timeout=30)
        finally:
            client.close()
        assert answer["type"] == "inventory.reservation.confirmed"
        assert answer["correlationid"] == command_id
        assert (answer["data"]["job_id"], answer["data"]["warehouse"]) == ("FS-77", "SHA")
        [seen] = logistics.get(f"{INV}/reservations", job_id="FS-77").body
        assert seen["id"] == answer["data"]["id"]
        assert seen["status"] == "confirmed"


ROAD_TO_GANZI = [
    "Ya'an",
    "Tianquan",
    "Erlang Shan tunnel",
    "Luding",
    "Kangding",
    "Zheduo pass",
    "Xinduqiao",
    "Yajiang",
    "Kazila pass",
    "Litang",
    "Haizi Shan",
    "Batang road junction",
]
SHP = "/shipments/api/v1/shipments"
TRK = "/tracking/api/v1"


class TestXRayTubeStory:
    """The tube for the CT scanner at Ganzi, on the wall clock: the engineer left the
    depot five and a half hours ago, passed three checkpoints on time, Luding late, and
    Kangding is half an hour overdue; the scanner must scan again within 18 hours."""

    def test_reserve_plan_carry_by_hand_alert_while_there_is_time_and_deliver(
        self, running, logistics, tokens
    ) -> None:
        service = as_user(running, tokens, "service")
        engineer = as_user(running, tokens, "engineer")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5.5)

        def at(hours: float) -> str:
            return (start + timedelta(hours=hours)).isoformat()

        def open_alerts() -> list[dict[str, Any]]:
            alerts = engineer.get(f"{TRK}/alerts", job_id="JOB-GANZI-CT").body
            return [a for a in alerts if a["status"] != "resolved"]

        def passed(checkpoint: str, hours: float) -> None:
            event = {"shipment_id": sid, "kind": "checkpoint", "checkpoint": checkpoint}
            reply = service.post(f"{TRK}/events", {**event, "occurred_at": at(hours)})
            assert reply.status == 201, reply

        receive(logistics, "XRT-2000", "CDU", 1)
        reply = service.post(
            f"{INV}/reservations",
            reservation_body(
                job_id="JOB-GANZI-CT",
                warehouse="CDU",
                owner="li.wei",
                required_by=at(18),
                site={"name": "Ganzi County Hospital", "region": "ganzi"},
            ),
        )
        assert reply.status == 201, reply
        tube = reply.body

        # Shipments plans it from the reservation's event, without anyone asking.
        def planned() -> dict[str, Any] | None:
            found = logistics.get(SHP, reservation_id=tube["id"], status="planned").body
            return found[0] if found else None

        shipment = wait_until(planned, timeout=30, message="a planned shipment for the tube")
        sid = shipment["id"]
        dispatched = logistics.post(
            f"{SHP}/{sid}/dispatch",
            {
                "mode": "hand_carry",
                "dispatched_at": at(0),
                "promised_delivery_at": at(13),
                "checkpoints": [
                    {"name": name, "due_at": at(i + 1)} for i, name in enumerate(ROAD_TO_GANZI)
                ],
            },
        )
        assert dispatched.status == 200, dispatched
        assert dispatched.body["status"] == "in_transit"
        wait_until(
            lambda: engineer.get(f"{TRK}/shipments/{sid}/eta").body.get("status") == "in_transit",
            timeout=30,
            message="tracking to follow the dispatch",
        )
        for checkpoint, hours in (("Ya'an", 1), ("Tianquan", 2), ("Erlang Shan tunnel", 3)):
            passed(checkpoint, hours)
        passed("Luding", 5.25)

        # Kangding was due an hour after Luding's plan: the scheduler calls it overdue
        # and the job at risk, with 12.5 hours still to go before the deadline.
        def alerted() -> dict[str, dict[str, Any]] | None:
            alerts = {a["kind"]: a for a in open_alerts()}
            return alerts if {"checkpoint_overdue", "at_risk"} <= set(alerts) else None

        alerts = wait_until(alerted, timeout=30, message="the overdue checkpoint alerted")
        overdue = alerts["checkpoint_overdue"]
        assert overdue["subject"] == f"{sid}/Kangding"
        assert (overdue["job_id"], overdue["owner"]) == ("JOB-GANZI-CT", "li.wei")
        assert alerts["at_risk"]["owner"] == "li.wei"
        job = engineer.get(f"{TRK}/jobs/JOB-GANZI-CT").body
        assert job["risk"] == "at_risk"
        assert job["parts"][0]["shipment_id"] == sid
        eta = engineer.get(f"{TRK}/shipments/{sid}/eta").body
        assert eta["next_checkpoint"]["name"] == "Kangding"
        assert datetime.fromisoformat(eta["eta"]) < start + timedelta(hours=18)

        # The engineer reports Kangding: the alerts resolve themselves.
        passed("Kangding", 5.5)
        wait_until(lambda: open_alerts() == [], timeout=30, message="the alerts to resolve")
        assert engineer.get(f"{TRK}/jobs/JOB-GANZI-CT").body["risk"] == "on_track"

        delivered = logistics.post(f"{SHP}/{sid}/deliver", {"received_by": "dr.zhou"})
        assert delivered.status == 200, delivered
        assert delivered.body["status"] == "delivered"
        wait_until(
            lambda: (
                engineer.get(f"{TRK}/jobs/JOB-GANZI-CT").body["parts"][0]["reservation_status"]
                == "fulfilled"
            ),
            timeout=30,
            message="inventory to fulfil the reservation",
        )
        job = engineer.get(f"{TRK}/jobs/JOB-GANZI-CT").body
        assert (job["risk"], job["parts"][0]["shipment_status"]) == ("delivered", "delivered")
        assert open_alerts() == []
        assert logistics.get(f"{INV}/reservations/{tube['id']}").body["status"] == "fulfilled"


class TestAWorkerKilledMidFlow:
    def test_commands_sent_while_it_is_down_are_applied_once_after_restart(
        self, running, logistics
    ) -> None:
        base = running.plan.gateway_url
        prefix = running.plan.settings.bus_prefix
        receive(logistics, "GEL-250", "CDU", 1000)
        with EventWatcher(prefix, "inventory.reservation.confirmed") as watcher:
            client = BusClient(AMQP_URL, prefix).open()
            try:
                sent = [self.reserve(client, i) for i in range(200)]
                client.collect_replies(lambda replies: len(replies) >= 20, timeout=60)
                running.kill("inventory-worker")
                answered_before_kill = len({r["correlationid"] for r in client.replies})
                assert answered_before_kill < len(sent), "the worker was killed mid-flow"

                # While it is down: more commands, and a reservation over HTTP whose
                # event waits in the outbox, since only the worker's relay sends it.
                sent += [self.reserve(client, i) for i in range(200, 300)]
                by_http = logistics.post(
                    f"{INV}/reservations",
                    reservation_body(job_id="WHILE-DOWN", part_number="GEL-250", warehouse="CDU"),
                )
                assert by_http.status == 201, by_http
                assert outbox_unsent(base) >= 1

                running.start("inventory-worker")
                running.wait_for_consumers("inventory")
                client.collect_replies(
                    lambda replies: {r["correlationid"] for r in replies} >= set(sent),
                    timeout=120,
                )
            finally:
                client.close()
            wait_until(
                lambda: "WHILE-DOWN" in watcher.job_ids(),
                timeout=60,
                message="the event of the reservation made while the worker was down",
            )
        replies = client.replies
        assert {r["correlationid"] for r in replies} == set(sent)
        assert {r["type"] for r in replies} == {"inventory.reservation.confirmed"}
        # At least once on the wire, exactly once in effect: one event per command, even
        # if the relay sent one again after the kill.
        assert len({r["id"] for r in replies}) == len(sent)
        reservations = logistics.get(
            f"{INV}/reservations", part_number="GEL-250", page_size=1000
        ).body
        per_job = Counter(r["job_id"] for r in reservations)
        assert per_job == Counter({f"KILL-{i}": 1 for i in range(300)} | {"WHILE-DOWN": 1})
        stock = stock_of(logistics, "GEL-250", "CDU")
        assert (stock["on_hand"], stock["reserved"]) == (1000, 301)
        wait_until(lambda: outbox_unsent(base) == 0, timeout=60, message="the outbox to drain")

    @staticmethod
    def reserve(client: BusClient, i: int) -> str:
        body = reservation_body(job_id=f"KILL-{i}", part_number="GEL-250", warehouse="CDU")
        return client.command("inventory.reserve", body, message_id=f"kill-{uuid.uuid4()}")


class EventWatcher:
    """A queue of this test's own on the events exchange, as a listener of
    Partsflow's events would have."""

    def __init__(self, prefix: str, routing_key: str) -> None:
        self.connection = Connection(AMQP_URL, connect_timeout=5)
        self.queue = Queue(
            f"{prefix}.test-watcher.{uuid.uuid4().hex[:6]}",
            exchange=Exchange(f"{prefix}.events", type="topic", durable=True, no_declare=True),
            routing_key=routing_key,
            durable=False,
            auto_delete=False,
        )
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> EventWatcher:
        with self.connection.channel() as channel:
            self.queue(channel).declare()
        return self

    def job_ids(self) -> set[str]:
        with self.connection.channel() as channel:
            queue = self.queue(channel)
            while (message := queue.get(no_ack=True)) is not None:
                self.events.append(json.loads(message.body))
        return {event["data"]["job_id"] for event in self.events}

    def __exit__(self, *_: object) -> None:
        try:
            with self.connection.channel() as channel:
                channel.queue_delete(self.queue.name)
        finally:
            self.connection.release()
