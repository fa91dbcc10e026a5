"""The stories tracking is for, through the whole chain: inventory reserves, shipments
plans and dispatches, tracking events come in, tracking judges and alerts, and the
lost-part rescue reserves a replacement by itself. Time is a clock the test moves.

Run on the embedded system (in-process bus, SQLite), and the TEE probe story once
more on PostgreSQL and RabbitMQ with the three services' workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from services import bootstrap
from services.embedded import EmbeddedSystem, PrefixDispatcher
from services.tracking.service import Tracking
from shared.clock import ManualClock
from tests.conftest import AMQP_URL, make_settings, wait_until
from tests.support import ApiClient, make_tokens

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
INV = "/inventory/api/v1"
SHP = "/shipments/api/v1/shipments"
TRK = "/tracking/api/v1"
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


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class World:
    """The three services behind one address, users of every role, and the clock."""

    wsgi: Any
    tokens: dict[str, str]
    clock: ManualClock
    tracking: Tracking
    wait_seconds: float = 20.0

    def api(self, role: str) -> ApiClient:
        return ApiClient(Client(self.wsgi), self.tokens[role])

    def ok(self, reply: Any, status: int = 200) -> Any:
        assert reply.status == status, reply
        return reply.body

    def wait(self, condition: Callable[[], Any], message: str) -> Any:
        return wait_until(condition, timeout=self.wait_seconds, message=message)

    def eta(self, shipment_id: str) -> dict[str, Any]:
        return self.ok(self.api("engineer").get(f"{TRK}/shipments/{shipment_id}/eta"))

    def job(self, job_id: str) -> dict[str, Any]:
        return self.ok(self.api("engineer").get(f"{TRK}/jobs/{job_id}"))

    def open_alerts(self, **query: Any) -> list[dict[str, Any]]:
        alerts = self.ok(self.api("engineer").get(f"{TRK}/alerts", **query))
        return [a for a in alerts if a["status"] != "resolved"]

    def tracked(self, shipment_id: str, status: str) -> bool:
        reply = self.api("engineer").get(f"{TRK}/shipments/{shipment_id}/eta")
        return reply.status == 200 and reply.body["status"] == status

    def scan_at(self, hours: float) -> None:
        self.clock.set(at(hours))
        self.tracking.scan()

    def post_event(self, hours: float, **body: Any) -> dict[str, Any]:
        self.clock.set(max(self.clock.now(), at(hours)))
        reply = self.api("service").post(f"{TRK}/events", {**body, "occurred_at": iso(at(hours))})
        return self.ok(reply, 201)


# ======================================================================================
# Worlds
# ======================================================================================
@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[World]:
    clock = ManualClock(T0)
    settings = make_settings(tmp_path, tracking_scan_seconds=3600)
    system = EmbeddedSystem(settings, clock=clock)
    tokens = make_tokens(system.settings)
    system.start_background()
    yield World(system.wsgi, tokens, clock, system.services["tracking"])
    system.close()


@pytest.fixture
def on_servers(postgres, rabbitmq, tmp_path: Path) -> Iterator[World]:
    clock = ManualClock(T0)
    settings = make_settings(
        tmp_path,
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("story"),
        inventory_db_url=postgres.create("inventory"),
        shipments_db_url=postgres.create("shipments"),
        tracking_db_url=postgres.create("tracking"),
        tracking_scan_seconds=3600,
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    bootstrap.upgrade_databases(settings)
    services = {name: bootstrap.open_service(name, settings, clock) for name in bootstrap.SERVICES}
    apps = {
        name: module.create_app(settings=settings, service=services[name])
        for name, module in bootstrap.SERVICES.items()
    }
    stop = threading.Event()
    workers = [
        bootstrap.create_worker(name, settings, service=services[name])
        for name in bootstrap.SERVICES
    ]
    for worker in workers:
        worker.start(stop)
    for worker in workers:
        wait_until(worker.consumer.connected.is_set, timeout=20, message="consumer connected")
    tokens = make_tokens(settings)
    yield World(
        PrefixDispatcher(dict(apps), default=apps["tracking"]),
        tokens,
        clock,
        services["tracking"],
        wait_seconds=30,
    )
    stop.set()
    for worker in workers:
        worker.join(timeout=20)
    for service in services.values():
        service.db.dispose()


# ======================================================================================
# Story steps
# ======================================================================================
def stock_up(world: World, part: str, serials_at: dict[str, list[str]]) -> None:
    logistics = world.api("logistics")
    for code, name, region in (
        ("SHA", "Shanghai central warehouse", "east-china"),
        ("CDU", "Chengdu regional depot", "sichuan"),
        ("URC", "Urumqi depot", "xinjiang"),
    ):
        world.ok(
            logistics.post(
                f"{INV}/warehouses",
                {"code": code, "name": name, "region": region, "kind": "depot"},
            ),
            201,
        )
    world.ok(
        logistics.post(
            f"{INV}/parts", {"part_number": part, "description": part, "serialized": True}
        ),
        201,
    )
    for code, serials in serials_at.items():
        body = {
            "warehouse": code,
            "part_number": part,
            "quantity": len(serials),
            "serials": serials,
        }
        world.ok(logistics.post(f"{INV}/receipts", body), 201)


def reserve(world: World, **body: Any) -> dict[str, Any]:
    reservation = world.ok(world.api("service").post(f"{INV}/reservations", body), 201)
    return reservation


def planned_shipment(world: World, reservation_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        shipments = world.ok(
            world.api("logistics").get(SHP, reservation_id=reservation_id, status="planned")
        )
        return shipments[0] if shipments else None

    return world.wait(found, f"a planned shipment for reservation {reservation_id}")


# ======================================================================================
# The X-ray tube to a remote county hospital
# ======================================================================================
class TestXRayTubeStory:
    def test_late_checkpoints_turn_the_job_at_risk_then_late_before_its_deadline(
        self, embedded: World
    ) -> None:
        world = embedded
        stock_up(world, "XRT-2000", {"CDU": ["XRT-C-2001"]})
        tube = reserve(
            world,
            job_id="JOB-GANZI-CT",
            part_number="XRT-2000",
            quantity=1,
            warehouse="CDU",
            priority="machine_down",
            owner="li.wei",
            required_by=iso(at(18)),
            site={"name": "Ganzi County Hospital", "region": "ganzi"},
        )
        shipment = planned_shipment(world, tube["id"])
        checkpoints = [
            {"name": name, "due_at": iso(at(i + 1))} for i, name in enumerate(ROAD_TO_GANZI)
        ]
        world.ok(
            world.api("logistics").post(
                f"{SHP}/{shipment['id']}/dispatch",
                {
                    "mode": "hand_carry",
                    "promised_delivery_at": iso(at(13)),
                    "checkpoints": checkpoints,
                },
            )
        )
        sid = shipment["id"]
        world.wait(lambda: world.tracked(sid, "in_transit"), "tracking follows the dispatch")
        eta = world.eta(sid)
        assert (eta["eta"], eta["basis"], eta["risk"]) == (iso(at(13)), "promised", "on_track")
        assert eta["next_checkpoint"]["name"] == "Ya'an"

        # The first three checkpoints on time, then Luding two hours late.
        for i, hours in enumerate((1, 2, 3)):
            world.post_event(hours, shipment_id=sid, kind="checkpoint", checkpoint=ROAD_TO_GANZI[i])
        assert world.job("JOB-GANZI-CT")["risk"] == "on_track"
        world.post_event(
            6, shipment_id=sid, kind="checkpoint", checkpoint="Luding", location="Luding bridge"
        )
        job = world.job("JOB-GANZI-CT")
        (part,) = job["parts"]
        assert (job["risk"], part["risk"]) == ("at_risk", "at_risk")
        assert part["eta"] == iso(at(15))
        assert "Luding (checkpoint 4 of 12) was passed 2.0 h late" in part["reason"]
        (at_risk,) = world.open_alerts(kind="at_risk", job_id="JOB-GANZI-CT")
        assert at_risk["owner"] == "li.wei"

        # Kangding (due at +5 h) is not reported: the scheduler notices, and by +10.5 h
        # the expected arrival is after the deadline, which is still 7.5 hours away.
        world.scan_at(10.5)
        job = world.job("JOB-GANZI-CT")
        assert job["risk"] == "late"
        (late,) = world.open_alerts(kind="late", job_id="JOB-GANZI-CT")
        (overdue,) = world.open_alerts(kind="checkpoint_overdue", job_id="JOB-GANZI-CT")
        assert overdue["subject"] == f"{sid}/Kangding"
        new_eta = job["parts"][0]["eta"]
        assert new_eta == iso(at(18.5))
        assert "checkpoint Kangding (5 of 12)" in overdue["message"]
        assert "ETA now 21 Nov 00:30 UTC" in overdue["message"]
        assert "Job JOB-GANZI-CT (owner li.wei)" in late["message"]
        assert world.open_alerts(kind="at_risk") == []  # late took over

        # The engineer makes up time over the passes and arrives before the deadline.
        for i, hours in enumerate((11, 12, 12.8, 13.5, 14.2, 15, 15.8, 16.5), start=4):
            world.post_event(hours, shipment_id=sid, kind="checkpoint", checkpoint=ROAD_TO_GANZI[i])
        world.post_event(17.5, shipment_id=sid, kind="delivered", location="CT room")
        world.wait(lambda: world.job("JOB-GANZI-CT")["risk"] == "delivered", "delivery known")
        assert world.open_alerts(job_id="JOB-GANZI-CT") == []
        # The chain went round: shipments delivered it, inventory fulfilled the reservation.
        world.wait(
            lambda: world.job("JOB-GANZI-CT")["parts"][0]["reservation_status"] == "fulfilled",
            "inventory fulfils the reservation",
        )
        shipped = world.ok(world.api("logistics").get(f"{SHP}/{sid}"))
        assert (shipped["status"], shipped["delivered_at"]) == ("delivered", iso(at(17.5)))


# ======================================================================================
# The lost probe
# ======================================================================================
def tee_probe_story(world: World) -> None:
    stock_up(world, "TEE-P7", {"SHA": ["TEE-S-0001"], "CDU": ["TEE-C-0002"]})
    probe = reserve(
        world,
        job_id="JOB-TEE-17",
        part_number="TEE-P7",
        quantity=1,
        warehouse="SHA",
        priority="urgent",
        owner="dr.chen",
        required_by=iso(at(48)),
        site={"name": "West China Children's Hospital", "region": "sichuan"},
    )
    shipment = planned_shipment(world, probe["id"])
    sid = shipment["id"]
    world.ok(
        world.api("logistics").post(
            f"{SHP}/{sid}/dispatch",
            {
                "mode": "carrier",
                "carrier": "SF Express",
                "tracking_number": "SF1409983321",
                "promised_delivery_at": iso(at(24)),
            },
        )
    )
    world.wait(lambda: world.tracked(sid, "in_transit"), "tracking follows the dispatch")
    scan = {"carrier": "SF Express", "tracking_number": "SF1409983321"}
    world.post_event(1, kind="picked_up", location="Shanghai", **scan)
    world.post_event(6, kind="in_transit", location="Xi'an hub", **scan)

    # Then nothing. The scheduler first calls it stalled, then lost.
    world.scan_at(12)
    assert world.open_alerts(job_id="JOB-TEE-17") == []
    world.scan_at(19)
    assert [a["kind"] for a in world.open_alerts(job_id="JOB-TEE-17")] == ["stalled"]
    # Its owners learn at once where else a probe is, and whether it can make the scan.

    def says_where_else() -> dict[str, Any] | None:
        stalled = world.open_alerts(kind="stalled", job_id="JOB-TEE-17")
        return next((a for a in stalled if "could come from" in a["message"]), None)

    stalled = world.wait(says_where_else, "the stalled alert to say where else a probe is")
    assert "another 1 × TEE-P7 could come from CDU (1 available there) by " in stalled["message"]
    assert ", in time for the required-by 22 Nov 06:00 UTC" in stalled["message"]
    world.scan_at(36)
    world.wait(lambda: world.tracked(sid, "lost"), "the shipment is declared lost")
    world.wait(
        lambda: world.ok(world.api("logistics").get(f"{SHP}/{sid}"))["status"] == "lost",
        "shipments follows",
    )

    # A replacement is reserved and planned without anyone asking.
    def replacement() -> dict[str, Any] | None:
        parts = world.job("JOB-TEE-17")["parts"]
        fresh = [p for p in parts if p["replaces"] == probe["id"] and p["shipment_id"]]
        return fresh[0] if fresh else None

    fresh = world.wait(replacement, "the replacement reserved and planned")
    assert (fresh["warehouse"], fresh["shipment_status"]) == ("CDU", "planned")
    (lost,) = world.open_alerts(kind="lost", job_id="JOB-TEE-17")
    assert lost["owner"] == "dr.chen"
    assert "is lost (no scan for 30.0 h" in lost["message"]
    assert "a replacement TEE-P7 is reserved at CDU" in lost["message"]
    # Planned by carrier, a day within the region: too late for the scan, and it says so.
    assert (
        "ETA 22 Nov 18:00 UTC, 12.0 h after the required-by 22 Nov 06:00 UTC" in (lost["message"])
    )
    assert world.open_alerts(kind="stalled", job_id="JOB-TEE-17") == []

    # So logistics sends it by courier instead; the engineer sees the new ETA.
    world.clock.set(at(37))
    world.ok(
        world.api("logistics").post(
            f"{SHP}/{fresh['shipment_id']}/dispatch",
            {"mode": "courier", "promised_delivery_at": iso(at(43))},
        )
    )
    world.wait(lambda: world.tracked(fresh["shipment_id"], "in_transit"), "courier on its way")
    job = world.job("JOB-TEE-17")
    by_reservation = {p["reservation_id"]: p for p in job["parts"]}
    assert by_reservation[probe["id"]]["risk"] == "lost"
    now_coming = by_reservation[fresh["reservation_id"]]
    assert (now_coming["eta"], now_coming["risk"]) == (iso(at(43)), "on_track")
    assert job["risk"] == "on_track"
    (lost,) = world.open_alerts(kind="lost", job_id="JOB-TEE-17")
    assert "ETA 22 Nov 01:00 UTC, in time" in lost["message"]

    world.post_event(42.5, shipment_id=fresh["shipment_id"], kind="delivered")
    world.wait(
        lambda: world.open_alerts(job_id="JOB-TEE-17") == [], "every alert of the job resolved"
    )
    assert world.job("JOB-TEE-17")["risk"] == "delivered"


class TestTeeProbeStory:
    def test_the_lost_probe_is_replaced_by_itself(self, embedded: World) -> None:
        tee_probe_story(embedded)

    def test_no_probe_anywhere_is_said_plainly(self, embedded: World) -> None:
        world = embedded
        stock_up(world, "TEE-P7", {"SHA": ["TEE-S-0001"]})
        probe = reserve(
            world,
            job_id="JOB-TEE-18",
            part_number="TEE-P7",
            quantity=1,
            priority="urgent",
            owner="dr.chen",
            required_by=iso(at(48)),
            site={"name": "West China Children's Hospital", "region": "sichuan"},
        )
        sid = planned_shipment(world, probe["id"])["id"]
        world.ok(
            world.api("logistics").post(
                f"{SHP}/{sid}/dispatch",
                {"mode": "carrier", "carrier": "SF Express", "tracking_number": "SF77"},
            )
        )
        world.wait(lambda: world.tracked(sid, "in_transit"), "tracking follows the dispatch")
        world.post_event(2, shipment_id=sid, kind="lost", note="the carrier lost the parcel")

        def says_no_stock() -> bool:
            alerts = world.open_alerts(kind="lost", job_id="JOB-TEE-18")
            return (
                bool(alerts) and "no TEE-P7 is in stock in any warehouse" in (alerts[0]["message"])
            )

        world.wait(says_no_stock, "the lost alert says no stock exists")
        (lost,) = world.open_alerts(kind="lost", job_id="JOB-TEE-18")
        assert "a unit must be found outside Partsflow" in lost["message"]
        assert "(the carrier lost the parcel)" in lost["message"]


@pytest.mark.postgres
@pytest.mark.rabbitmq
class TestTeeProbeStoryOnServers:
    def test_the_lost_probe_is_replaced_by_itself(self, on_servers: World) -> None:
        tee_probe_story(on_servers)
