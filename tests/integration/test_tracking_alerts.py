"""Alerts raised from events and by the scheduler: one per problem, resolved when the
problem goes, never a storm; ETAs announced only when they move a step."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from shared.bus.consumer import Outcome
from shared.config import Settings
from tests.integration.tracking_support import (
    T0,
    V1,
    TrackingUnderTest,
    at,
    event_body,
    hourly_checkpoints,
    iso,
    reservation_data,
    shipment_data,
    start_tracking,
)


@pytest.fixture
def tracking(settings: Settings) -> Iterator[TrackingUnderTest]:
    system = start_tracking(settings)
    yield system
    system.service.db.dispose()


def kinds_open(tracking: TrackingUnderTest, **query: object) -> list[str]:
    return sorted(a["kind"] for a in tracking.open_alerts(**query))


def post(tracking: TrackingUnderTest, body: dict) -> None:
    reply = tracking.api("service").post(f"{V1}/events", body)
    assert reply.status in (200, 201), reply


class TestRaisedOnceResolvedWhenGone:
    def test_late_takes_over_from_at_risk_and_delivery_resolves(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(12), required_by=iso(at(17.5)))
        tracking.shipment("dispatched", shipment)
        assert kinds_open(tracking) == []
        tracking.clock.set(at(4.1))
        post(tracking, event_body(shipment["id"], "checkpoint", at(4), checkpoint="CP2"))
        # Two hours behind plan (CP3 is due already): expected 21:00, but it could be
        # after the 23:30 deadline.
        assert kinds_open(tracking) == ["at_risk", "checkpoint_overdue"]
        tracking.clock.set(at(8))
        tracking.service.scan()
        assert kinds_open(tracking) == ["checkpoint_overdue", "late"]
        late = tracking.open_alerts(kind="late")[0]
        overdue = tracking.open_alerts(kind="checkpoint_overdue")[0]
        assert overdue["subject"] == f"{shipment['id']}/CP3"
        assert "checkpoint CP3 (3 of 12)" in overdue["message"]
        assert "ETA now" in late["message"] and "Job JOB-7 (owner li.wei)" in late["message"]
        (resolved,) = tracking.alerts(kind="at_risk")
        assert resolved["status"] == "resolved" and resolved["resolved_at"] == iso(at(8))
        tracking.clock.set(at(15))
        post(tracking, event_body(shipment["id"], "delivered", at(15)))
        assert kinds_open(tracking) == []
        published = Counter(m["type"] for m in tracking.published())
        assert published["tracking.alert.raised"] == 3
        assert published["tracking.alert.resolved"] == 3

    def test_a_shipment_without_reservations_is_judged_by_its_own_time_not_the_job_s(
        self, tracking: TrackingUnderTest
    ) -> None:
        # Two shipments planned by hand for one job: the first must be there in 2 h,
        # the second names no time.
        urgent = shipment_data(required_by=iso(at(2)), promised_delivery_at=iso(at(13)))
        untimed = shipment_data(required_by=None, promised_delivery_at=iso(at(13)))
        tracking.shipment("dispatched", urgent)
        tracking.shipment("dispatched", untimed)
        eta = tracking.api().get(f"{V1}/shipments/{untimed['id']}/eta").body
        assert (eta["required_by"], eta["risk"]) == (None, "on_track")
        late = tracking.open_alerts(kind="late")
        assert [a["shipment_id"] for a in late] == [urgent["id"]]

    def test_late_and_at_risk_take_over_from_each_other_as_the_estimate_moves(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(12), required_by=iso(at(17.5)))
        tracking.shipment("dispatched", shipment)
        eta_url = f"{V1}/shipments/{shipment['id']}/eta"
        tracking.clock.set(at(4.1))
        post(tracking, event_body(shipment["id"], "checkpoint", at(4), checkpoint="CP2"))
        tracking.clock.set(at(8))
        tracking.service.scan()
        assert tracking.api().get(eta_url).body["risk"] == "late"
        assert kinds_open(tracking) == ["checkpoint_overdue", "late"]
        # Scans catch up a little: no longer expected after the required-by, so that
        # problem is gone; it could still be late, which is the at_risk one.
        for name, hours in (("CP3", 8.1), ("CP4", 8.2)):
            tracking.clock.set(at(hours))
            post(tracking, event_body(shipment["id"], "checkpoint", at(hours), checkpoint=name))
        assert tracking.api().get(eta_url).body["risk"] == "at_risk"
        assert kinds_open(tracking) == ["at_risk", "checkpoint_overdue"]
        # Silence again: late takes over from the open at_risk alert once more.
        tracking.clock.set(at(13))
        tracking.service.scan()
        assert tracking.api().get(eta_url).body["risk"] == "late"
        assert kinds_open(tracking) == ["checkpoint_overdue", "late"]
        # Back on track: neither is open.
        tracking.clock.set(at(13.3))
        post(tracking, event_body(shipment["id"], "checkpoint", at(13.3), checkpoint="CP12"))
        assert tracking.api().get(eta_url).body["risk"] == "on_track"
        assert {"late", "at_risk"} & set(kinds_open(tracking)) == set()

    def test_a_job_handed_over_has_its_open_alerts_name_the_new_owner(
        self, tracking: TrackingUnderTest
    ) -> None:
        first = reservation_data()
        tracking.reservation("confirmed", first)
        shipment = shipment_data(
            checkpoints=hourly_checkpoints(12),
            lines=[{"part_number": "XRT-2000", "quantity": 1, "reservation_id": first["id"]}],
        )
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3.5))
        tracking.service.scan()
        (overdue,) = tracking.open_alerts(kind="checkpoint_overdue")
        assert overdue["owner"] == "li.wei" and "(owner li.wei)" in overdue["message"]
        # Another part for the same job, now owned by someone else.
        tracking.reservation(
            "confirmed", reservation_data(part_number="GEL-250", owner="zhang.min")
        )
        (overdue,) = tracking.open_alerts(kind="checkpoint_overdue")
        assert overdue["owner"] == "zhang.min" and "(owner zhang.min)" in overdue["message"]
        assert [a["id"] for a in tracking.open_alerts(owner="zhang.min")] == [overdue["id"]]
        assert tracking.open_alerts(owner="li.wei") == []
        # A later event of the first reservation (still li.wei's) does not hand it back.
        tracking.reservation("issued", {**first, "status": "issued", "version": 2})
        tracking.clock.set(at(3.6))
        tracking.service.scan()
        (overdue,) = tracking.open_alerts(kind="checkpoint_overdue")
        assert overdue["owner"] == "zhang.min"

    def test_a_late_delivery_is_one_alert(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data(required_by=iso(at(10)))
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(12))
        post(tracking, event_body(shipment["id"], "delivered", at(11)))
        assert kinds_open(tracking) == ["delivered_late"]
        (alert,) = tracking.open_alerts()
        assert "delivered on 20 Nov 17:00 UTC, 1.0 h after its required-by" in alert["message"]
        assert tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body["risk"] == (
            "delivered_late"
        )

    def test_exception_raised_and_resolved_by_the_next_scan(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(mode="carrier", carrier="SF", tracking_number="SF9")
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        post(tracking, event_body(shipment["id"], "exception", at(2), note="held at customs"))
        (alert,) = tracking.open_alerts(kind="exception")
        assert "(held at customs)" in alert["message"]
        assert tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body["status"] == (
            "exception"
        )
        post(tracking, event_body(shipment["id"], "in_transit", at(2.5)))
        assert tracking.open_alerts(kind="exception") == []


class TestWhoAnAlertIsFor:
    @pytest.mark.parametrize(
        ("destination", "named"),
        [
            ({"site": None, "warehouse": "SHA", "region": "east-china"}, "Transfer to SHA: "),
            (
                {"site": "Ganzi County Hospital", "warehouse": None, "region": "ganzi"},
                "Shipment to Ganzi County Hospital: ",
            ),
        ],
    )
    def test_only_a_shipment_to_a_warehouse_is_a_transfer(
        self, tracking: TrackingUnderTest, destination: dict, named: str
    ) -> None:
        shipment = shipment_data(
            job_id=None, owner=None, priority=None, required_by=None, destination=destination
        )
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        post(tracking, event_body(shipment["id"], "exception", at(2), note="held at customs"))
        (alert,) = tracking.open_alerts(kind="exception")
        assert alert["message"].startswith(named), alert["message"]
        assert (alert["job_id"], alert["owner"]) == (None, None)


class TestDuplicatesAndReordering:
    def test_the_same_events_twice_and_out_of_order_raise_nothing_twice(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(6), required_by=iso(at(8)))
        tracking.shipment("planned", {**shipment, "status": "planned"}, version=1)
        tracking.shipment("dispatched", shipment, version=3)
        tracking.shipment("updated", {**shipment, "status": "planned"}, version=2)  # stale
        tracking.clock.set(at(4))
        bodies = [
            event_body(shipment["id"], "checkpoint", at(h), checkpoint=f"CP{h}", event_id=f"e{h}")
            for h in (3, 1, 2)
        ]
        for body in bodies + bodies:
            post(tracking, body)
        for _ in range(3):
            tracking.service.scan()
        raised = Counter(
            (m["data"]["subject"], m["data"]["kind"])
            for m in tracking.published("tracking.alert.raised")
        )
        assert raised and all(count == 1 for count in raised.values())
        active = Counter((a["subject"], a["kind"]) for a in tracking.open_alerts())
        assert all(count == 1 for count in active.values())

    def test_a_thousand_scans_of_one_shipment_are_not_a_thousand_alerts(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(
            mode="carrier",
            carrier="SF",
            tracking_number="SF1000",
            promised_delivery_at=iso(at(24)),
            required_by=iso(at(20)),
        )
        tracking.shipment("dispatched", shipment)
        for n in range(1000):
            moment = T0 + timedelta(minutes=n + 1)
            tracking.clock.set(moment)
            kind = "exception" if n % 100 == 50 else "in_transit"
            body = {
                "carrier": "SF",
                "tracking_number": "SF1000",
                "kind": kind,
                "occurred_at": iso(moment),
                "event_id": f"scan-{n}",
            }
            post(tracking, body)
            if n % 10 == 0:
                tracking.service.scan()
        published = Counter(m["type"] for m in tracking.published())
        assert published["tracking.event.recorded"] == 1000
        # Late from the start; ten exceptions, each cleared by the next scan.
        assert kinds_open(tracking) == ["late"]
        assert published["tracking.alert.raised"] == 1 + 10
        assert published["tracking.eta.updated"] < 25
        assert tracking.open_alerts(kind="late")[0]["raised_at"] == iso(T0)


class TestEtaAnnouncements:
    def test_only_when_the_eta_moves_more_than_the_step(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(12))
        tracking.shipment("dispatched", shipment)
        first = tracking.published("tracking.eta.updated")
        assert len(first) == 1 and first[0]["data"]["eta"] == iso(at(13))
        tracking.clock.set(at(1.2))
        post(tracking, event_body(shipment["id"], "checkpoint", at(1.1), checkpoint="CP1"))
        assert len(tracking.published("tracking.eta.updated")) == 1  # moved 6 min
        tracking.clock.set(at(3))
        post(tracking, event_body(shipment["id"], "checkpoint", at(2.5), checkpoint="CP2"))
        updates = tracking.published("tracking.eta.updated")
        assert len(updates) == 2
        assert updates[-1]["data"]["eta"] == iso(at(13.5))
        assert updates[-1]["data"]["previous_eta"] == iso(at(13))
        assert updates[-1]["data"]["basis"] == "checkpoints"

    def test_an_eta_that_is_gone_is_announced_once_as_null(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        post(tracking, event_body(shipment["id"], "lost", at(2), note="fell off the truck"))
        tracking.service.scan()
        updates = tracking.published("tracking.eta.updated")
        assert [u["data"]["eta"] for u in updates] == [iso(at(13)), None]
        assert (updates[-1]["data"]["status"], updates[-1]["data"]["risk"]) == ("lost", "lost")


class TestScheduler:
    def test_silence_stalls_then_loses_a_carrier_shipment(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(
            mode="carrier",
            carrier="SF",
            tracking_number="SF77",
            promised_delivery_at=iso(at(24)),
            required_by=iso(at(48)),
        )
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(6))
        post(tracking, event_body(shipment["id"], "in_transit", at(6)))
        tracking.service.scan(at(17))
        assert kinds_open(tracking) == []
        tracking.service.scan(at(19))
        assert kinds_open(tracking) == ["stalled"]
        result = tracking.service.scan(at(40))
        assert result["declared_lost"] == 1
        assert kinds_open(tracking) == ["lost"]
        (lost_event,) = [
            m for m in tracking.published("tracking.event.recorded") if m["data"]["kind"] == "lost"
        ]
        assert lost_event["data"]["shipment_id"] == shipment["id"]
        assert "no scan for 34.0 h" in lost_event["data"]["note"]
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["risk"], eta["eta"]) == ("lost", "lost", None)
        assert tracking.service.scan(at(41))["declared_lost"] == 0

    def test_a_dispatch_recorded_a_day_late_is_stalled_not_lost_at_once(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(
            mode="carrier",
            carrier="SF",
            tracking_number="SF78",
            promised_delivery_at=iso(at(24)),
            required_by=iso(at(48)),
        )
        tracking.clock.set(at(30))
        tracking.shipment("dispatched", shipment)  # dispatched at T0, recorded at 30 h
        assert tracking.service.scan(at(30.1))["declared_lost"] == 0
        assert "stalled" in kinds_open(tracking)
        assert tracking.service.scan(at(30 + 60))["declared_lost"] == 1
        assert "lost" in kinds_open(tracking)

    def test_a_lane_whose_deliveries_are_never_scanned_allows_its_transit_in_silence(
        self, tracking: TrackingUnderTest
    ) -> None:
        """Courier deliveries on a lane took 3 to 5 h with no scan on the way: silence
        is stalled only past what they kept, not after the mode's usual 2 h. A lane
        whose couriers scan every half hour keeps the short limit."""

        def deliver_history(destination: str, scans_every: float | None) -> None:
            for n in range(20):
                hours = 3 + 2 * n / 19
                past = shipment_data(
                    mode="courier",
                    destination={"site": "Hospital", "warehouse": None, "region": destination},
                    promised_delivery_at=None,
                    dispatched_at=iso(at(-100 + n)),
                )
                tracking.shipment("dispatched", past)
                if scans_every is not None:
                    for k in range(1, int(hours / scans_every)):
                        moment = at(-100 + n + k * scans_every)
                        post(tracking, event_body(past["id"], "in_transit", moment))
                delivered = at(-100 + n + hours)
                tracking.shipment(
                    "delivered", {**past, "status": "delivered", "delivered_at": iso(delivered)}
                )

        deliver_history("yunnan", scans_every=None)
        deliver_history("tibet", scans_every=0.5)
        quiet = shipment_data(
            mode="courier",
            destination={"site": "Hospital", "warehouse": None, "region": "yunnan"},
            promised_delivery_at=None,
            required_by=iso(at(48)),
            job_id="JOB-QUIET",
        )
        chatty = {
            **quiet,
            "id": str(uuid.uuid4()),
            "destination": {"site": "Hospital", "warehouse": None, "region": "tibet"},
            "job_id": "JOB-CHATTY",
        }
        tracking.shipment("dispatched", quiet)
        tracking.shipment("dispatched", chatty)

        tracking.service.scan(at(2.5))
        assert kinds_open(tracking, job_id="JOB-QUIET") == []
        assert kinds_open(tracking, job_id="JOB-CHATTY") == ["stalled"]
        tracking.service.scan(at(7))
        assert kinds_open(tracking, job_id="JOB-QUIET") == ["stalled"]
        [stalled] = tracking.open_alerts(job_id="JOB-QUIET")
        assert "longer than this lane allows" in stalled["message"]

    def test_low_stock_raised_and_resolved_in_the_order_sent(
        self, tracking: TrackingUnderTest
    ) -> None:
        stock = {"warehouse": "CDU", "part_number": "GEL-250", "on_hand": 3, "reserved": 0}
        low = {**stock, "available": 3, "reorder_point": 20}
        full = {**stock, "on_hand": 40, "available": 40, "reorder_point": 20}
        tracking.deliver("inventory.stock.low", low, sent_at=at(1))
        (alert,) = tracking.open_alerts(kind="low_stock")
        assert alert["subject"] == "GEL-250@CDU" and alert["shipment_id"] is None
        tracking.deliver("inventory.stock.replenished", full, sent_at=at(3))
        tracking.deliver("inventory.stock.low", low, sent_at=at(2))  # older: changes nothing
        assert tracking.open_alerts(kind="low_stock") == []
        tracking.deliver("inventory.stock.low", low, sent_at=at(4))
        assert len(tracking.open_alerts(kind="low_stock")) == 1
        # Lower still: the same alert, telling the new level, and the control tower hears.
        tracking.deliver(
            "inventory.stock.low", {**low, "on_hand": 1, "available": 1}, sent_at=at(5)
        )
        (alert,) = tracking.open_alerts(kind="low_stock")
        assert alert["message"].startswith("Low stock: 1 GEL-250 available at CDU")
        (updated,) = tracking.published("tracking.alert.updated")
        assert updated["data"]["message"] == alert["message"]


class TestPartsStillWaitingForAShipment:
    def test_a_cancelled_shipment_keeps_its_parts_risk_in_the_alerts_until_another_carries_them(
        self, tracking: TrackingUnderTest
    ) -> None:
        tube = reservation_data(job_id="JOB-C", required_by=iso(at(100)))
        tracking.reservation("confirmed", tube)
        lines = [{"part_number": "XRT-2000", "quantity": 1, "reservation_id": tube["id"]}]
        planned = shipment_data(
            job_id="JOB-C",
            status="planned",
            mode="carrier",
            dispatched_at=None,
            promised_delivery_at=None,
            required_by=iso(at(100)),
            lines=lines,
        )
        tracking.shipment("planned", planned)
        (before,) = tracking.open_alerts(job_id="JOB-C")
        assert before["kind"] == "at_risk"
        tracking.shipment("cancelled", {**planned, "status": "cancelled"})
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-C").body
        (part,) = job["parts"]
        assert part["reason"].startswith("Its shipment was cancelled and no other carries it yet")
        assert part["risk"] == job["risk"] == "at_risk"
        # The control tower still sees it: the same alert, saying why.
        (alert,) = tracking.open_alerts(job_id="JOB-C")
        assert (alert["id"], alert["kind"], alert["owner"]) == (before["id"], "at_risk", "li.wei")
        assert "Job JOB-C (owner li.wei)" in alert["message"]
        assert "was cancelled and no other shipment carries its parts yet" in alert["message"]
        # Nothing planned for a day and a half: now it would arrive too late.
        tracking.clock.set(at(40))
        tracking.service.scan()
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-C").body
        assert job["risk"] == "late"
        assert kinds_open(tracking, job_id="JOB-C") == ["late"]
        # Another shipment is planned for it: the cancelled one has nothing left to say.
        again = shipment_data(
            job_id="JOB-C",
            status="planned",
            mode="hand_carry",
            dispatched_at=None,
            promised_delivery_at=None,
            required_by=iso(at(100)),
            lines=lines,
        )
        tracking.shipment("planned", again)
        assert tracking.open_alerts(shipment_id=planned["id"]) == []
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-C").body
        assert (job["parts"][0]["shipment_id"], job["risk"]) == (again["id"], "at_risk")
        assert [(a["shipment_id"], a["kind"]) for a in tracking.open_alerts(job_id="JOB-C")] == [
            (again["id"], job["risk"])
        ]

    @pytest.mark.parametrize("shipments_first", [False, True])
    def test_a_part_taken_for_a_machine_down_job_is_at_risk_until_reserved_again(
        self, tracking: TrackingUnderTest, shipments_first: bool
    ) -> None:
        tube = reservation_data(
            job_id="JOB-R", priority="routine", owner="zhang.min", required_by=iso(at(200))
        )
        tracking.reservation("confirmed", tube)
        lines = [{"part_number": "XRT-2000", "quantity": 1, "reservation_id": tube["id"]}]
        planned = shipment_data(
            job_id="JOB-R",
            status="planned",
            mode="carrier",
            dispatched_at=None,
            promised_delivery_at=None,
            priority="routine",
            owner="zhang.min",
            required_by=iso(at(200)),
            lines=lines,
        )
        tracking.shipment("planned", planned)
        assert tracking.api().get(f"{V1}/jobs/JOB-R").body["risk"] == "on_track"
        # A machine-down job elsewhere takes the tube; its planned shipment, now empty,
        # is cancelled (inventory and shipments may be heard of in either order).
        tracking.clock.set(at(1))
        steps = [
            lambda: tracking.reservation(
                "preempted", {**tube, "status": "preempted", "version": 2}
            ),
            lambda: tracking.shipment("cancelled", {**planned, "status": "cancelled", "lines": []}),
        ]
        for step in reversed(steps) if shipments_first else steps:
            step()
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-R").body
        (part,) = job["parts"]
        assert part["reservation_status"] == "preempted" and part["shipment_id"] is None
        assert part["reason"].startswith("Taken for a machine-down job elsewhere and nothing")
        assert part["risk"] == job["risk"] == "at_risk"
        (alert,) = tracking.open_alerts(job_id="JOB-R")
        assert (alert["kind"], alert["owner"], alert["subject"]) == (
            "at_risk",
            "zhang.min",
            tube["id"],
        )
        assert alert["message"].startswith("Job JOB-R (owner zhang.min): 1 XRT-2000 reserved at")
        assert "taken for a machine-down job elsewhere" in alert["message"]
        raised = [m["data"] for m in tracking.published("tracking.alert.raised")]
        assert [a["id"] for a in raised if a["job_id"] == "JOB-R"] == [alert["id"]]
        open_jobs = tracking.api().get(f"{V1}/jobs").body
        assert [(j["job_id"], j["risk"]) for j in open_jobs] == [("JOB-R", "at_risk")]
        # Another tube is reserved for the job: the risk is gone, and so is the alert.
        tracking.clock.set(at(2))
        tracking.reservation("confirmed", {**tube, "id": str(uuid.uuid4()), "warehouse": "XIY"})
        assert tracking.open_alerts(job_id="JOB-R") == []
        resolved = [m["data"] for m in tracking.published("tracking.alert.resolved")]
        assert [a["id"] for a in resolved] == [alert["id"]]
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-R").body
        old = next(p for p in job["parts"] if p["reservation_id"] == tube["id"])
        assert old["risk"] == "on_track" and "a newer reservation replaces it" in old["reason"]
        assert job["risk"] == "on_track"

    def test_a_part_released_by_people_raises_nothing(self, tracking: TrackingUnderTest) -> None:
        tube = reservation_data(job_id="JOB-X", required_by=iso(at(200)))
        tracking.reservation("confirmed", tube)
        tracking.reservation("released", {**tube, "status": "released", "version": 2})
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-X").body
        assert (job["parts"][0]["risk"], job["risk"]) == ("on_track", "on_track")
        assert tracking.open_alerts(job_id="JOB-X") == []


@pytest.mark.postgres
def test_an_exception_and_a_loss_with_long_notes_are_alerted_on_postgresql(
    postgres, tmp_path
) -> None:
    from tests.conftest import make_settings

    system = start_tracking(make_settings(tmp_path, tracking_db_url=postgres.create("long_note")))
    try:
        shipment = shipment_data(mode="carrier", carrier="SF", tracking_number="SF1")
        system.shipment("dispatched", shipment)
        system.clock.set(at(2))
        note = "customs hold: " + "papers missing " * 65  # the 1,000 characters a note may have
        reply = system.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "exception", at(1), note=note[:1000])
        )
        assert reply.status == 201, reply
        (alert,) = system.open_alerts(kind="exception")
        assert note[:1000].strip() in alert["message"]
        reply = system.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "lost", at(2), note=note[:1000])
        )
        assert reply.status == 201, reply
        (alert,) = system.open_alerts(kind="lost")
        assert note[:1000].strip() in alert["message"]
    finally:
        system.service.db.dispose()


def test_where_else_is_taken_only_as_inventory_tells_it(tracking: TrackingUnderTest) -> None:
    probe = reservation_data()
    tracking.reservation("confirmed", probe)
    line = {"part_number": "XRT-2000", "quantity": 1, "reservation_id": probe["id"]}
    shipment = shipment_data(mode="carrier", carrier="SF", tracking_number="SF2", lines=[line])
    tracking.shipment("dispatched", shipment)
    tracking.clock.set(at(2))
    post(tracking, event_body(shipment["id"], "exception", at(1), note="not found at sort"))
    located = {"part_number": "XRT-2000", "quantity": 1, "shipment_id": shipment["id"]}
    # An answer without its arrival times is not one: dead-lettered, the views unharmed.
    broken = {**located, "alternatives": [{"warehouse": "SHA", "available": 1}]}
    outcome, _ = tracking.deliver("inventory.stock.located", broken)
    assert outcome is Outcome.DEAD
    assert tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").status == 200
    arrival = {"warehouse": "SHA", "available": 1, "estimated_arrival": iso(at(40))}
    outcome, _ = tracking.deliver("inventory.stock.located", {**located, "alternatives": [arrival]})
    assert outcome is Outcome.ACK
    (alert,) = tracking.open_alerts(kind="exception")
    assert "another 1 × XRT-2000 could come from SHA (1 available there) by " in alert["message"]
