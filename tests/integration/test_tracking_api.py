"""Tracking's API and commands: events in by id or tracking number, repeats and
reordering, the ETA, the job read model, alerts and their acknowledgement."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.bus.consumer import Outcome
from shared.config import Settings
from tests.integration.conftest import RunningSystem
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
from tests.support import reservation_body


@pytest.fixture
def tracking(settings: Settings) -> Iterator[TrackingUnderTest]:
    system = start_tracking(settings)
    yield system
    system.service.db.dispose()


def carrier_shipment(**changes: object) -> dict:
    return shipment_data(
        mode="carrier",
        carrier="SF",
        tracking_number="SF1234567",
        promised_delivery_at=iso(at(24)),
        required_by=iso(at(48)),
        **changes,
    )


class TestRecordEvent:
    def test_by_shipment_id(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(3))
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(1.2))
        body = event_body(shipment["id"], "checkpoint", at(1.1), checkpoint="CP1", location="Ya'an")
        reply = tracking.api("service").post(f"{V1}/events", body)
        assert reply.status == 201, reply
        event = reply.body
        assert event["shipment_id"] == shipment["id"]
        assert (event["kind"], event["checkpoint"], event["location"]) == (
            "checkpoint",
            "CP1",
            "Ya'an",
        )
        assert event["occurred_at"] == iso(at(1.1))
        recorded = tracking.published("tracking.event.recorded")
        assert [m["data"]["id"] for m in recorded] == [event["id"]]
        assert recorded[0]["subject"] == shipment["id"]
        eta = tracking.api("engineer").get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["checkpoints"][0]["passed_at"] == iso(at(1.1))
        assert eta["next_checkpoint"]["name"] == "CP2"
        listed = tracking.api("viewer").get(f"{V1}/shipments/{shipment['id']}/events").body
        assert [e["id"] for e in listed] == [event["id"]]

    def test_by_carrier_and_tracking_number(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        body = {
            "carrier": "SF",
            "tracking_number": "SF1234567",
            "kind": "in_transit",
            "occurred_at": iso(at(3)),
            "location": "Chengdu hub",
        }
        reply = tracking.api("service").post(f"{V1}/events", body)
        assert reply.status == 201, reply
        assert reply.body["shipment_id"] == shipment["id"]
        assert reply.body["tracking_number"] == "SF1234567"
        # A carrier's system writing its name or the number in another case.
        tracking.clock.set(at(5))
        later = {**body, "carrier": "sf", "tracking_number": "sf1234567", "occurred_at": iso(at(4))}
        reply = tracking.api("service").post(f"{V1}/events", later)
        assert reply.status == 201, reply
        assert reply.body["shipment_id"] == shipment["id"]
        named = event_body(shipment["id"], "in_transit", at(4.5), carrier="sf")
        assert tracking.api("service").post(f"{V1}/events", named).status == 201

    def test_an_unknown_shipment_is_404(self, tracking: TrackingUnderTest) -> None:
        reply = tracking.api("service").post(
            f"{V1}/events", event_body("no-such-shipment", "in_transit", T0)
        )
        assert reply.status == 404
        assert reply.headers["Content-Type"] == "application/problem+json"
        by_number = {
            "carrier": "SF",
            "tracking_number": "NOPE",
            "kind": "in_transit",
            "occurred_at": iso(T0),
        }
        assert tracking.api("service").post(f"{V1}/events", by_number).status == 404
        assert tracking.published("tracking.event.recorded") == []

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"shipment_id": None}, "shipment_id"),
            ({"occurred_at": "2026-11-20T08:00:00"}, "occurred_at"),
            ({"kind": "teleported"}, "kind"),
            ({"id": "mine"}, "id"),
            ({"carrier": "SF", "shipment_id": None}, "tracking_number"),
        ],
    )
    def test_invalid_bodies_are_422(
        self, tracking: TrackingUnderTest, change: dict, field: str
    ) -> None:
        body = {k: v for k, v in {**event_body("s1", "in_transit", T0), **change}.items()}
        body = {k: v for k, v in body.items() if v is not None}
        reply = tracking.api("service").post(f"{V1}/events", body)
        assert reply.status == 422, reply
        assert field in reply.body["errors"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [({"carrier": "DHL"}, "carrier"), ({"tracking_number": "SF7654321"}, "tracking_number")],
    )
    def test_a_carrier_or_number_not_the_shipment_s_is_422(
        self, tracking: TrackingUnderTest, change: dict, field: str
    ) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        body = event_body(shipment["id"], "in_transit", at(3), **change)
        reply = tracking.api("service").post(f"{V1}/events", body)
        assert reply.status == 422, reply
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert list(reply.body["errors"]) == [field]
        assert tracking.api().get(f"{V1}/shipments/{shipment['id']}/events").body == []
        assert tracking.published("tracking.event.recorded") == []
        # Its own carrier and number are welcome.
        own = event_body(
            shipment["id"], "in_transit", at(3), carrier="SF", tracking_number="SF1234567"
        )
        assert tracking.api("service").post(f"{V1}/events", own).status == 201

    def test_the_planned_carrier_is_not_held_against_a_scan_before_the_dispatch(
        self, tracking: TrackingUnderTest
    ) -> None:
        # Planned with SF; dispatched with DHL, whose scan comes before tracking hears
        # of the dispatch.
        shipment = carrier_shipment()
        tracking.shipment("planned", {**shipment, "status": "planned", "dispatched_at": None})
        tracking.clock.set(at(1))
        scan = event_body(shipment["id"], "picked_up", at(1), carrier="DHL", event_id="D-1")
        assert tracking.api("service").post(f"{V1}/events", scan).status == 201
        dispatched = {**shipment, "carrier": "DHL", "version": 2}
        tracking.shipment("dispatched", dispatched)
        # The same scan sent again is still a repeat, not a contradiction.
        assert tracking.api("service").post(f"{V1}/events", scan).status == 200

    def test_a_repeated_event_id_is_accepted_once(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(2))
        body = event_body(shipment["id"], "in_transit", at(2), event_id="SF-evt-991")
        first = tracking.api("service").post(f"{V1}/events", body)
        again = tracking.api("service").post(f"{V1}/events", body)
        assert (first.status, again.status) == (201, 200)
        assert again.body["id"] == first.body["id"]
        listed = tracking.api().get(f"{V1}/shipments/{shipment['id']}/events").body
        assert len(listed) == 1
        assert len(tracking.published("tracking.event.recorded")) == 1

    def test_a_shipment_s_events_are_listed_a_page_at_a_time(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(6))
        for hour in range(1, 6):
            body = event_body(shipment["id"], "in_transit", at(hour))
            assert tracking.api("service").post(f"{V1}/events", body).status == 201
        url = f"{V1}/shipments/{shipment['id']}/events"
        first = tracking.api().get(url, page_size=2)
        assert [e["occurred_at"] for e in first.body] == [iso(at(1)), iso(at(2))]
        assert json.loads(first.headers["X-Pagination"]) == {
            "total": 5,
            "total_pages": 3,
            "first_page": 1,
            "last_page": 3,
            "page": 1,
            "next_page": 2,
        }
        last = tracking.api().get(url, page_size=2, page=3)
        assert [e["occurred_at"] for e in last.body] == [iso(at(5))]

    def test_events_out_of_order_are_placed_by_occurred_at(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(3))
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(4))
        api = tracking.api("service")
        for kind, hours, checkpoint in (
            ("delivered", 3.5, None),
            ("checkpoint", 2.0, "CP2"),
            ("checkpoint", 1.0, "CP1"),
            ("checkpoint", 3.0, "CP3"),
        ):
            extra = {"checkpoint": checkpoint} if checkpoint else {}
            body = event_body(shipment["id"], kind, at(hours), **extra)
            assert api.post(f"{V1}/events", body).status == 201
        eta = api.get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["status"] == "delivered"
        assert eta["eta"] == iso(at(3.5))
        assert eta["last_event"]["kind"] == "delivered"
        assert [c["passed_at"] for c in eta["checkpoints"]] == [iso(at(h)) for h in (1, 2, 3)]
        assert eta["next_checkpoint"] is None
        events = api.get(f"{V1}/shipments/{shipment['id']}/events").body
        assert [e["occurred_at"] for e in events] == [iso(at(h)) for h in (1, 2, 3, 3.5)]

    def test_a_scan_recorded_before_the_plan_arrived_still_passes_its_checkpoint(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(status="planned", dispatched_at=None, checkpoints=[])
        tracking.shipment("planned", shipment)
        tracking.clock.set(at(1.5))
        body = event_body(shipment["id"], "checkpoint", at(1.2), checkpoint="cp1")
        assert tracking.api("service").post(f"{V1}/events", body).status == 201
        tracking.shipment("dispatched", {**shipment, "checkpoints": hourly_checkpoints(3)})
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["checkpoints"][0]["passed_at"] == iso(at(1.2))

    def test_an_event_from_the_future_is_refused(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(5))
        api = tracking.api("service")
        # A sender's clock a minute ahead is taken; a delivery two days ahead is not.
        assert (
            api.post(f"{V1}/events", event_body(shipment["id"], "in_transit", at(5.02))).status
            == 201
        )
        reply = api.post(f"{V1}/events", event_body(shipment["id"], "delivered", at(53)))
        assert reply.status == 422, reply
        assert "occurred_at" in reply.body["errors"]
        eta = api.get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["status"] == "in_transit"

    def test_roles(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(1))
        body = event_body(shipment["id"], "in_transit", at(1))
        assert tracking.api(None).post(f"{V1}/events", body).status == 401
        assert tracking.api("viewer").post(f"{V1}/events", body).status == 403
        assert tracking.api("engineer").post(f"{V1}/events", body).status == 403
        assert tracking.api("logistics").post(f"{V1}/events", body).status == 201
        assert tracking.api(None).get(f"{V1}/shipments/{shipment['id']}/eta").status == 401


class TestEventsFollowTheShipmentsStateMachine:
    """Shipments follows the same events with its own state machine; tracking moves as
    it does, so the two never tell different stories."""

    def status(self, tracking: TrackingUnderTest, shipment_id: str) -> str:
        return tracking.api().get(f"{V1}/shipments/{shipment_id}/eta").body["status"]

    def post(self, tracking: TrackingUnderTest, shipment_id: str, kind: str, hours: float):
        reply = tracking.api("service").post(
            f"{V1}/events", event_body(shipment_id, kind, at(hours))
        )
        assert reply.status == 201, reply

    def test_a_shipment_not_dispatched_is_not_lost_or_held_up(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(status="planned", dispatched_at=None, checkpoints=[])
        tracking.shipment("planned", shipment)
        tracking.clock.set(at(2))
        self.post(tracking, shipment["id"], "lost", 1)
        self.post(tracking, shipment["id"], "exception", 1.5)
        assert self.status(tracking, shipment["id"]) == "planned"
        assert tracking.open_alerts(kind="lost") == []
        assert tracking.published("inventory.reserve") == []

    def test_an_ended_journey_stays_ended(self, tracking: TrackingUnderTest) -> None:
        cancelled = shipment_data(status="cancelled", dispatched_at=None, checkpoints=[])
        tracking.shipment("cancelled", cancelled)
        lost = shipment_data()
        tracking.shipment("dispatched", lost)
        tracking.clock.set(at(6))
        self.post(tracking, cancelled["id"], "delivered", 5)
        self.post(tracking, lost["id"], "lost", 3)
        self.post(tracking, lost["id"], "checkpoint", 4)
        self.post(tracking, lost["id"], "delivered", 5)
        assert self.status(tracking, cancelled["id"]) == "cancelled"
        assert self.status(tracking, lost["id"]) == "lost"

    def test_a_scan_after_an_exception_resumes(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(6))
        self.post(tracking, shipment["id"], "exception", 3)
        assert self.status(tracking, shipment["id"]) == "exception"
        self.post(tracking, shipment["id"], "in_transit", 4)
        assert self.status(tracking, shipment["id"]) == "in_transit"


class TestRecordEventCommand:
    def test_the_answer_carries_the_command_id(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(1))
        command_id = "cmd-0001"
        body = {**event_body(shipment["id"], "picked_up", at(1)), "event_id": "e-1"}
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id=command_id)
        assert outcome is Outcome.ACK
        (answer,) = tracking.published("tracking.event.recorded")
        assert answer["correlationid"] == command_id
        assert answer["data"]["kind"] == "picked_up"
        # The same command delivered twice changes nothing.
        tracking.deliver("tracking.record_event", body, message_id=command_id)
        assert len(tracking.published("tracking.event.recorded")) == 1
        # Another command with the sender's same event id is answered, not recorded again.
        tracking.deliver("tracking.record_event", body, message_id="cmd-0002")
        repeat = tracking.published("tracking.event.recorded")[-1]
        assert (repeat["correlationid"], repeat["data"]["id"]) == (
            "cmd-0002",
            answer["data"]["id"],
        )
        assert repeat["data"]["repeat"] is True
        events = tracking.api().get(f"{V1}/shipments/{shipment['id']}/events").body
        assert len(events) == 1

    def test_a_shipment_still_on_its_way_is_waited_for(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data()
        body = event_body(shipment["id"], "in_transit", T0)
        # The command came before shipments' event about the shipment.
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-early")
        assert outcome is Outcome.LATER
        assert tracking.published("tracking.event.rejected") == []
        tracking.shipment("dispatched", shipment)
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-early")
        assert outcome is Outcome.ACK
        (recorded,) = tracking.published("tracking.event.recorded")
        assert recorded["correlationid"] == "cmd-early"

    def test_an_unknown_shipment_is_rejected_never_dropped(
        self, tracking: TrackingUnderTest
    ) -> None:
        body = event_body("no-such-shipment", "in_transit", T0)
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-404")
        assert outcome is Outcome.LATER  # it may be on its way: asked again shortly
        tracking.consumer.news_wait_seconds = 0.0  # and then it waited long enough
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-404")
        assert outcome is Outcome.ACK
        (rejected,) = tracking.published("tracking.event.rejected")
        assert rejected["correlationid"] == "cmd-404"
        assert rejected["data"]["command_id"] == "cmd-404"
        assert rejected["data"]["reason"] == "not-found"
        assert rejected["data"]["shipment_id"] == "no-such-shipment"

    def test_invalid_data_is_rejected(self, tracking: TrackingUnderTest) -> None:
        body = {"kind": "in_transit", "occurred_at": "yesterday"}
        tracking.deliver("tracking.record_event", body, message_id="cmd-422")
        (rejected,) = tracking.published("tracking.event.rejected")
        assert rejected["data"]["command_id"] == "cmd-422"
        assert rejected["data"]["reason"] == "validation-error"
        assert "occurred_at" in rejected["data"]["errors"]

    def test_an_event_from_the_future_is_rejected_with_its_reason(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        body = event_body(shipment["id"], "in_transit", at(5))
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-future")
        assert outcome is Outcome.ACK
        (rejected,) = tracking.published("tracking.event.rejected")
        assert rejected["correlationid"] == "cmd-future"
        assert rejected["data"]["reason"] == "validation-error"
        assert rejected["data"]["shipment_id"] == shipment["id"]
        assert "occurred_at" in rejected["data"]["errors"]
        assert tracking.published("tracking.event.recorded") == []

    def test_a_carrier_not_the_shipment_s_is_rejected(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3))
        body = event_body(shipment["id"], "in_transit", at(3), carrier="DHL")
        outcome, _ = tracking.deliver("tracking.record_event", body, message_id="cmd-other")
        assert outcome is Outcome.ACK
        (rejected,) = tracking.published("tracking.event.rejected")
        assert rejected["correlationid"] == "cmd-other"
        assert rejected["data"]["reason"] == "validation-error"
        assert (rejected["data"]["shipment_id"], rejected["data"]["carrier"]) == (
            shipment["id"],
            "DHL",
        )
        assert list(rejected["data"]["errors"]) == ["carrier"]
        assert tracking.published("tracking.event.recorded") == []


class TestShipmentReadModel:
    def test_a_stale_or_repeated_version_changes_nothing(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment, version=3)
        tracking.shipment("planned", {**shipment, "status": "planned"}, version=2)
        tracking.shipment("dispatched", {**shipment, "mode": "courier"}, version=3)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["mode"]) == ("in_transit", "hand_carry")

    def test_a_late_version_still_moving_does_not_undo_a_delivery(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(5))
        reply = tracking.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "delivered", at(4))
        )
        assert reply.status == 201
        # Shipments' version published before it heard of the delivery.
        tracking.shipment("exception", {**shipment, "status": "exception"})
        assert tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body["status"] == (
            "delivered"
        )

    def test_an_end_shipments_decided_stands_over_tracking_s_guess(
        self, tracking: TrackingUnderTest
    ) -> None:
        # Lost and delivered posted at once while tracking still took the shipment for
        # planned: it took the delivery, shipments (dispatched by then) the loss.
        shipment = shipment_data(status="planned", dispatched_at=None)
        tracking.shipment("planned", shipment)
        tracking.clock.set(at(5))
        for kind in ("lost", "delivered"):
            reply = tracking.api("service").post(
                f"{V1}/events", event_body(shipment["id"], kind, at(4))
            )
            assert reply.status == 201
        tracking.shipment(
            "dispatched", {**shipment, "status": "in_transit", "dispatched_at": iso(T0)}
        )
        tracking.shipment("lost", {**shipment, "status": "lost", "dispatched_at": iso(T0)})
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["risk"]) == ("lost", "lost")
        assert [a["kind"] for a in tracking.open_alerts(kind="lost")] == ["lost"]

    def test_a_delivery_scanned_before_its_dispatch_was_heard_of_is_learnt(
        self, tracking: TrackingUnderTest
    ) -> None:
        # Dispatched in shipments with a past time, and at once scanned delivered, while
        # tracking still had the shipment as planned.
        shipment = shipment_data(
            status="planned", dispatched_at=None, mode="courier", promised_delivery_at=None
        )
        tracking.shipment("planned", shipment)
        tracking.clock.set(at(10))
        reply = tracking.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "delivered", at(7))
        )
        assert reply.status == 201
        dispatched = {**shipment, "status": "in_transit", "dispatched_at": iso(at(2))}
        tracking.shipment("dispatched", dispatched)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["dispatched_at"]) == ("delivered", iso(at(2)))
        # The next shipment on the lane learns from its 5 h transit, once.
        tracking.shipment(
            "delivered", {**dispatched, "status": "delivered", "delivered_at": iso(at(7))}
        )
        following = shipment_data(
            mode="courier", promised_delivery_at=None, dispatched_at=iso(at(9))
        )
        tracking.shipment("dispatched", following)
        eta = tracking.api().get(f"{V1}/shipments/{following['id']}/eta").body
        assert eta["basis"] == "default"
        assert "only 1 past delivery on this lane (5.0 h at the median)" in eta["reason"]

    def test_unknown_shipment_and_job_are_404(self, tracking: TrackingUnderTest) -> None:
        assert tracking.api().get(f"{V1}/shipments/nope/eta").status == 404
        assert tracking.api().get(f"{V1}/jobs/nope").status == 404


class TestEta:
    def test_before_dispatch_the_eta_counts_from_now(self, tracking: TrackingUnderTest) -> None:
        shipment = shipment_data(
            status="planned", dispatched_at=None, promised_delivery_at=None, mode="courier"
        )
        tracking.shipment("planned", shipment)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["status"] == "planned"
        assert eta["basis"] == "default"
        assert iso(T0) <= eta["eta_earliest"] <= eta["eta"] <= eta["eta_latest"]
        assert eta["next_checkpoint"] is None

    def test_scanned_on_its_way_before_the_dispatch_is_recorded_it_counts_from_its_pickup(
        self, tracking: TrackingUnderTest
    ) -> None:
        """The engineer sees a part that left two hours ago, not one "leaving now"."""
        shipment = shipment_data(
            status="planned", dispatched_at=None, promised_delivery_at=None, mode="courier"
        )
        tracking.shipment("planned", shipment)
        tracking.clock.set(at(3))
        before = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        for kind, hours in (("picked_up", 1), ("in_transit", 2)):
            reply = tracking.api("service").post(
                f"{V1}/events", event_body(shipment["id"], kind, at(hours))
            )
            assert reply.status == 201, reply
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["status"] == "planned"
        assert not eta["reason"].startswith("Not dispatched yet")
        # Two hours sooner than leaving at three: it left at one.
        assert _hours(before["eta"]) - _hours(eta["eta"]) == pytest.approx(2, abs=0.05)
        assert iso(at(3)) <= eta["eta_earliest"] <= eta["eta"] <= eta["eta_latest"]
        # Held up after that, it still left at one.
        reply = tracking.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "exception", at(2.5), note="customs")
        )
        assert reply.status == 201, reply
        held = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert not held["reason"].startswith("Not dispatched yet"), held["reason"]
        assert held["eta"] >= eta["eta"]

    def test_promised_time_without_history(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(1))
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["basis"] == "promised"
        assert eta["eta_earliest"] < eta["eta"] < eta["eta_latest"]
        assert abs(_hours(eta["eta"]) - 24) < 1
        assert eta["risk"] == "on_track"
        assert eta["reason"].endswith(".")

    def test_lane_history_loaded_through_past_shipments(self, tracking: TrackingUnderTest) -> None:
        for hours in (10, 11, 12, 12, 13, 14, 15):
            past = shipment_data(
                mode="courier",
                status="delivered",
                promised_delivery_at=None,
                dispatched_at=iso(T0 - timedelta(days=30)),
                delivered_at=iso(T0 - timedelta(days=30) + timedelta(hours=hours)),
            )
            tracking.shipment("delivered", past)
        shipment = shipment_data(mode="courier", promised_delivery_at=None)
        tracking.shipment("dispatched", shipment)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["basis"] == "lane_history"
        assert eta["eta"] == iso(at(12))
        assert _hours(eta["eta_earliest"]) < 11 and _hours(eta["eta_latest"]) > 13
        assert "7 past deliveries" in eta["reason"]
        # Another lane (by carrier) knows nothing of it.
        other = shipment_data(mode="courier", carrier="DHL", promised_delivery_at=None)
        tracking.shipment("dispatched", other)
        assert tracking.api().get(f"{V1}/shipments/{other['id']}/eta").body["basis"] == "default"

    def test_a_lane_is_one_whatever_the_case_of_its_regions_and_carrier(
        self, tracking: TrackingUnderTest
    ) -> None:
        for n, hours in enumerate((20, 22, 24, 24, 26, 28, 30)):
            past = shipment_data(
                mode="carrier",
                carrier=("EMS", "ems ")[n % 2],
                tracking_number=f"E{n}",
                origin_region=("sichuan", "Sichuan")[n % 2],
                destination={
                    "site": "Lhasa",
                    "warehouse": None,
                    "region": ("Tibet", "tibet")[n % 2],
                },
                status="delivered",
                promised_delivery_at=None,
                dispatched_at=iso(T0 - timedelta(days=30)),
                delivered_at=iso(T0 - timedelta(days=30) + timedelta(hours=hours)),
            )
            tracking.shipment("delivered", past)
        shipment = shipment_data(
            mode="carrier",
            carrier="Ems",
            tracking_number="E99",
            destination={"site": "Lhasa", "warehouse": None, "region": "TIBET"},
            promised_delivery_at=None,
        )
        tracking.shipment("dispatched", shipment)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["basis"], eta["eta"]) == ("lane_history", iso(at(24)))
        assert "7 past deliveries" in eta["reason"]

    def test_a_carrier_shipment_not_dispatched_reads_every_carrier_on_its_route(
        self, tracking: TrackingUnderTest
    ) -> None:
        for carrier, hours in (("SF", 20), ("SF", 22), ("SF", 24), ("EMS", 26), ("EMS", 30)):
            past = shipment_data(
                mode="carrier",
                carrier=carrier,
                tracking_number=f"{carrier}{hours}",
                status="delivered",
                promised_delivery_at=None,
                dispatched_at=iso(T0 - timedelta(days=30)),
                delivered_at=iso(T0 - timedelta(days=30) + timedelta(hours=hours)),
            )
            tracking.shipment("delivered", past)
        planned = shipment_data(
            mode="carrier", status="planned", dispatched_at=None, promised_delivery_at=None
        )
        tracking.shipment("planned", planned)
        eta = tracking.api().get(f"{V1}/shipments/{planned['id']}/eta").body
        assert eta["basis"] == "lane_history"
        assert eta["eta"] == iso(at(24))
        # Dispatched with its carrier, it reads that carrier's deliveries alone.
        dispatched = {**planned, "status": "in_transit", "dispatched_at": iso(T0)}
        tracking.shipment("dispatched", dispatched | {"carrier": "SF", "tracking_number": "SF1"})
        eta = tracking.api().get(f"{V1}/shipments/{planned['id']}/eta").body
        assert eta["basis"] != "lane_history" and "3 past deliveries" in eta["reason"]

    def test_an_out_for_delivery_scan_brings_the_eta_within_the_day(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(
            mode="carrier",
            carrier="SF",
            tracking_number="SF1234567",
            promised_delivery_at=iso(at(48)),
            required_by=iso(at(30)),
        )
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(20))
        before = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert before["risk"] == "late" and _hours(before["eta"]) > 40
        assert [a["kind"] for a in tracking.open_alerts(shipment_id=shipment["id"])] == ["late"]
        scan = event_body(shipment["id"], "out_for_delivery", at(19.5), location="Ganzi")
        assert tracking.api("service").post(f"{V1}/events", scan).status == 201
        after = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert after["eta"] == iso(at(22.5))
        assert after["eta_earliest"] == iso(at(20))
        assert after["eta_latest"] == iso(at(29.5))
        assert after["risk"] == "on_track"
        assert after["reason"].startswith("Out for delivery since 21 Nov 01:30 UTC")
        # The late alert was about the estimate the scan has replaced.
        assert tracking.open_alerts(shipment_id=shipment["id"]) == []
        # A failed attempt (back in transit at the depot) ends the last round.
        tracking.clock.set(at(21))
        back = event_body(shipment["id"], "in_transit", at(21), location="Ganzi depot")
        assert tracking.api("service").post(f"{V1}/events", back).status == 201
        again = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert _hours(again["eta"]) > 40 and again["risk"] == "late"

    def test_never_before_now_while_on_the_way(self, tracking: TrackingUnderTest) -> None:
        shipment = carrier_shipment()
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(40))
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["eta"] >= iso(at(40)) and eta["eta_latest"] >= eta["eta"]
        assert eta["eta_earliest"] >= iso(at(40))

    def test_the_earliest_is_not_before_now_between_whole_minutes(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = carrier_shipment(checkpoints=hourly_checkpoints(3))
        tracking.shipment("dispatched", shipment)
        now = at(40) + timedelta(seconds=30)
        tracking.clock.set(now)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert now <= datetime.fromisoformat(eta["eta_earliest"]), eta
        assert eta["eta_earliest"] <= eta["eta"] <= eta["eta_latest"]
        # Its checkpoints' plan is long past: judged on them, it is just as true.
        tracking.clock.set(now + timedelta(seconds=1))
        scan = event_body(shipment["id"], "checkpoint", at(39), checkpoint="CP3")
        assert tracking.api("service").post(f"{V1}/events", scan).status == 201
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["basis"] == "checkpoints"
        assert now + timedelta(seconds=1) <= datetime.fromisoformat(eta["eta_earliest"]), eta

    @pytest.mark.parametrize("end", ["delivered", "lost"])
    def test_once_the_journey_ended_no_checkpoint_is_overdue(
        self, tracking: TrackingUnderTest, end: str
    ) -> None:
        reservation = reservation_data()
        tracking.reservation("confirmed", reservation)
        line = {"part_number": "XRT-2000", "quantity": 1, "reservation_id": reservation["id"]}
        shipment = shipment_data(checkpoints=hourly_checkpoints(12), lines=[line])
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(14))
        body = event_body(shipment["id"], "checkpoint", at(2), checkpoint="CP2")
        assert tracking.api("service").post(f"{V1}/events", body).status == 201
        # CP1 was never scanned, CP3..CP12 never passed before the journey ended.
        body = event_body(shipment["id"], end, at(13))
        assert tracking.api("service").post(f"{V1}/events", body).status == 201
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert eta["status"] == end
        assert [c["overdue"] for c in eta["checkpoints"]] == [False] * 12
        assert eta["next_checkpoint"] is None
        # Delivered, it went by every checkpoint it was not scanned at; lost, only by
        # those before the last one passed.
        missed = [c["missed"] for c in eta["checkpoints"]]
        assert missed == [True, False] + [end == "delivered"] * 10
        job = tracking.api().get(f"{V1}/jobs/JOB-7").body
        (part,) = job["parts"]
        assert [c["overdue"] for c in part["checkpoints"]] == [False] * 12

    def test_a_scan_after_the_delivery_is_kept_but_the_last_news_stays_the_arrival(
        self, tracking: TrackingUnderTest
    ) -> None:
        reservation = reservation_data()
        tracking.reservation("confirmed", reservation)
        line = {"part_number": "XRT-2000", "quantity": 1, "reservation_id": reservation["id"]}
        shipment = shipment_data(lines=[line])
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(14))
        api = tracking.api("service")
        assert (
            api.post(f"{V1}/events", event_body(shipment["id"], "delivered", at(12))).status == 201
        )
        # The carrier's system reports the parcel lost after it was signed for.
        late = event_body(shipment["id"], "lost", at(13), note="parcel not found at hub")
        assert api.post(f"{V1}/events", late).status == 201
        eta = api.get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["risk"]) == ("delivered", "delivered")
        (part,) = api.get(f"{V1}/jobs/JOB-7").body["parts"]
        assert part["last_event"]["kind"] == "delivered"
        events = api.get(f"{V1}/shipments/{shipment['id']}/events").body
        assert [e["kind"] for e in events] == ["delivered", "lost"]

    def test_a_checkpoint_gone_by_unscanned_is_missed_not_overdue(
        self, tracking: TrackingUnderTest
    ) -> None:
        shipment = shipment_data(checkpoints=hourly_checkpoints(5))
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(3.5))
        for name, hours in (("CP1", 1), ("CP3", 3)):
            body = event_body(shipment["id"], "checkpoint", at(hours), checkpoint=name)
            assert tracking.api("service").post(f"{V1}/events", body).status == 201
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        states = [(c["name"], c["overdue"], c["missed"], c["ahead"]) for c in eta["checkpoints"]]
        assert states == [
            ("CP1", False, False, False),
            ("CP2", False, True, False),
            ("CP3", False, False, False),
            ("CP4", False, False, True),
            ("CP5", False, False, False),
        ]
        # Still the first not passed, as the contract says, but known to be behind.
        nxt = eta["next_checkpoint"]
        assert (nxt["name"], nxt["missed"], nxt["ahead"]) == ("CP2", True, False)
        assert not nxt["overdue"]
        tracking.clock.set(at(4.5))
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert [c["name"] for c in eta["checkpoints"] if c["overdue"]] == ["CP4"]
        # Once delivered, nothing is ahead.
        tracking.shipment(
            "delivered", {**shipment, "status": "delivered", "delivered_at": iso(at(5))}
        )
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert [c["name"] for c in eta["checkpoints"] if c["ahead"]] == []


class TestJobView:
    def test_the_jobs_a_person_holds_now(self, tracking: TrackingUnderTest) -> None:
        """Story 3: the desk hands JOB-2 over to its field engineer; each sees the jobs
        they hold, without asking anyone."""
        tracking.reservation("confirmed", reservation_data(job_id="JOB-1", owner="li.wei"))
        tracking.reservation("confirmed", reservation_data(job_id="JOB-2", owner="desk.ma"))
        tracking.reservation("confirmed", reservation_data(job_id="JOB-2", owner="Zhang.San"))
        api = tracking.api("engineer")

        def held_by(owner: str) -> list[str]:
            reply = api.get(f"{V1}/jobs", owner=owner)
            assert reply.status == 200, reply
            return [job["job_id"] for job in reply.body]

        assert held_by("li.wei") == ["JOB-1"]
        assert held_by("zhang.san") == ["JOB-2"]
        assert held_by("desk.ma") == []
        assert sorted(j["job_id"] for j in api.get(f"{V1}/jobs").body) == ["JOB-1", "JOB-2"]

    def test_parts_reservations_and_shipments_of_a_job(self, tracking: TrackingUnderTest) -> None:
        tube = reservation_data(job_id="JOB-9")
        gel = reservation_data(job_id="JOB-9", part_number="GEL-250", quantity=2, serials=[])
        tracking.reservation("confirmed", tube)
        tracking.reservation("confirmed", gel)
        shipment = shipment_data(
            job_id="JOB-9",
            lines=[{"part_number": "XRT-2000", "quantity": 1, "reservation_id": tube["id"]}],
            checkpoints=hourly_checkpoints(12),
        )
        tracking.shipment("dispatched", shipment)
        tracking.clock.set(at(1.5))
        tracking.api("service").post(
            f"{V1}/events", event_body(shipment["id"], "checkpoint", at(1), checkpoint="CP1")
        )
        reply = tracking.api("engineer").get(f"{V1}/jobs/JOB-9")
        assert reply.status == 200, reply
        job = reply.body
        assert (job["owner"], job["priority"], job["required_by"]) == (
            "li.wei",
            "machine_down",
            iso(at(24)),
        )
        assert job["site"] == {"name": "Ganzi County Hospital", "region": "ganzi"}
        by_part = {p["part_number"]: p for p in job["parts"]}
        tube_part = by_part["XRT-2000"]
        assert tube_part["reservation_id"] == tube["id"]
        assert tube_part["reservation_status"] == "confirmed"
        assert tube_part["warehouse"] == "CDU"
        assert (tube_part["shipment_id"], tube_part["shipment_status"]) == (
            shipment["id"],
            "in_transit",
        )
        assert tube_part["eta_earliest"] <= tube_part["eta"] <= tube_part["eta_latest"]
        assert tube_part["last_event"]["checkpoint"] == "CP1"
        assert tube_part["reason"]
        assert tube_part["risk"] == "on_track"
        gel_part = by_part["GEL-250"]
        assert gel_part["shipment_id"] is None and gel_part["quantity"] == 2
        # Not even planned, and a carrier takes two days from Chengdu: the job is late.
        assert gel_part["basis"] == "default" and gel_part["eta"] > iso(at(24))
        assert gel_part["reason"].startswith("No shipment planned yet")
        assert gel_part["risk"] == job["risk"] == "late"

    def test_a_part_whose_shipment_was_cancelled_waits_for_another(
        self, tracking: TrackingUnderTest
    ) -> None:
        tube = reservation_data(job_id="JOB-C")
        tracking.reservation("confirmed", tube)
        lines = [{"part_number": "XRT-2000", "quantity": 1, "reservation_id": tube["id"]}]
        planned = shipment_data(job_id="JOB-C", status="planned", dispatched_at=None, lines=lines)
        tracking.shipment("planned", planned)
        tracking.shipment("cancelled", {**planned, "status": "cancelled"})
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-C").body
        (part,) = job["parts"]
        assert (part["shipment_id"], part["shipment_status"]) == (planned["id"], "cancelled")
        assert part["reason"].startswith("Its shipment was cancelled and no other carries it yet")
        # Still to be shipped from Chengdu, two days by carrier: past the required-by.
        assert part["eta"] is not None and part["risk"] == job["risk"] == "late"

    def test_a_work_order_number_with_slashes(self, tracking: TrackingUnderTest) -> None:
        tracking.reservation("confirmed", reservation_data(job_id="WO/2026/1042"))
        reply = tracking.api("engineer").get(f"{V1}/jobs/WO/2026/1042")
        assert reply.status == 200, reply
        assert reply.body["job_id"] == "WO/2026/1042"
        assert [p["part_number"] for p in reply.body["parts"]] == ["XRT-2000"]

    def test_stale_reservation_events_are_refused(self, tracking: TrackingUnderTest) -> None:
        tube = reservation_data(job_id="JOB-3")
        tracking.reservation("issued", {**tube, "status": "issued", "version": 2})
        tracking.reservation("confirmed", tube)
        job = tracking.api().get(f"{V1}/jobs/JOB-3").body
        assert job["parts"][0]["reservation_status"] == "issued"

    def test_open_jobs_listed_worst_first(self, tracking: TrackingUnderTest) -> None:
        tracking.reservation("confirmed", reservation_data(job_id="CALM"))
        late = shipment_data(job_id="LATE", required_by=iso(at(5)))
        tracking.shipment("dispatched", late)
        jobs = tracking.api().get(f"{V1}/jobs").body
        assert [j["job_id"] for j in jobs] == ["LATE", "CALM"]
        assert jobs[0]["risk"] == "late"


class TestAlertsApi:
    def test_filter_acknowledge_and_resolve(self, tracking: TrackingUnderTest) -> None:
        late = shipment_data(job_id="JOB-L", owner="zhang.min", required_by=iso(at(5)))
        tracking.shipment("dispatched", late)
        (alert,) = tracking.alerts(job_id="JOB-L")
        assert (alert["kind"], alert["status"], alert["owner"]) == ("late", "open", "zhang.min")
        assert alert["subject"] == late["id"] and alert["shipment_id"] == late["id"]
        assert tracking.alerts(owner="nobody") == []
        # Her name in any case finds her alerts.
        assert [a["id"] for a in tracking.alerts(owner="Zhang.Min")] == [alert["id"]]
        assert tracking.alerts(kind="late", status="open")[0]["id"] == alert["id"]
        url = f"{V1}/alerts/{alert['id']}/acknowledge"
        assert tracking.api("viewer").post(url, {}).status == 403
        reply = tracking.api("engineer").post(url, {"note": "calling the hospital"})
        assert reply.status == 200, reply
        assert (reply.body["status"], reply.body["note"]) == (
            "acknowledged",
            "calling the hospital",
        )
        assert reply.body["acknowledged_by"] == "test-engineer"
        assert tracking.alerts(status="open", job_id="JOB-L") == []
        assert len(tracking.alerts(status="acknowledged")) == 1
        tracking.clock.set(at(4))
        tracking.api("service").post(f"{V1}/events", event_body(late["id"], "delivered", at(4)))
        (resolved,) = tracking.alerts(job_id="JOB-L", kind="late")
        assert resolved["status"] == "resolved" and resolved["resolved_at"] == iso(at(4))
        assert tracking.api("engineer").post(url, {}).status == 409
        assert tracking.api().post(f"{V1}/alerts/nope/acknowledge", {}).status == 404

    def test_paginated(self, tracking: TrackingUnderTest) -> None:
        for n in range(3):
            tracking.shipment("dispatched", shipment_data(job_id=f"J{n}", required_by=iso(at(1))))
        reply = tracking.api().get(f"{V1}/alerts", page_size=2)
        assert len(reply.body) == 2
        assert '"total": 3' in reply.headers["X-Pagination"]


def _hours(text: str) -> float:
    return (datetime.fromisoformat(text) - T0).total_seconds() / 3600


class TestAShipmentJustCreated:
    """Tracking hears of a shipment from shipments' events a moment after shipments
    answered: a carrier's event, or a look at the ETA, sent in that moment is still
    answered for the shipment, not with 404."""

    @pytest.fixture(autouse=True)
    def warehouse(self, embedded: RunningSystem) -> None:
        depot = {"code": "CDU", "name": "Chengdu depot", "region": "sichuan", "kind": "depot"}
        tube = {"part_number": "XRT-2000", "description": "X-ray tube", "serialized": False}
        logistics = embedded.api("logistics")
        assert logistics.post("/inventory/api/v1/warehouses", depot).status == 201
        assert logistics.post("/inventory/api/v1/parts", tube).status == 201

    def create_shipment(self, embedded: RunningSystem) -> str:
        reply = embedded.api("logistics").post(
            "/shipments/api/v1/shipments",
            {
                "origin": "CDU",
                "destination": {"site": "Ganzi County Hospital", "region": "ganzi"},
                "mode": "hand_carry",
                "lines": [{"part_number": "XRT-2000", "quantity": 1}],
            },
        )
        assert reply.status == 201, reply
        return reply.body["id"]

    def test_an_event_posted_at_once_is_recorded(self, embedded: RunningSystem) -> None:
        carrier = embedded.api("service")
        for _ in range(6):
            shipment_id = self.create_shipment(embedded)
            now = datetime.now(UTC)
            reply = carrier.post(f"{V1}/events", event_body(shipment_id, "picked_up", now))
            assert reply.status == 201, reply
            assert reply.body["shipment_id"] == shipment_id

    def test_its_eta_and_events_are_answered_at_once(self, embedded: RunningSystem) -> None:
        engineer = embedded.api("engineer")
        for _ in range(3):
            shipment_id = self.create_shipment(embedded)
            reply = engineer.get(f"{V1}/shipments/{shipment_id}/eta")
            assert reply.status == 200, reply
            assert (reply.body["shipment_id"], reply.body["status"]) == (shipment_id, "planned")
            shipment_id = self.create_shipment(embedded)
            reply = engineer.get(f"{V1}/shipments/{shipment_id}/events")
            assert (reply.status, reply.body) == (200, [])

    def test_a_job_just_reserved_for_is_shown_at_once(self, embedded: RunningSystem) -> None:
        logistics, engineer = embedded.api("logistics"), embedded.api("engineer")
        receipt = {"warehouse": "CDU", "part_number": "XRT-2000", "quantity": 3}
        assert logistics.post("/inventory/api/v1/receipts", receipt).status == 201
        for n in range(3):
            body = reservation_body(part_number="XRT-2000", warehouse="CDU", job_id=f"JUST-{n}")
            reserved = logistics.post("/inventory/api/v1/reservations", body)
            assert reserved.status == 201, reserved
            reply = engineer.get(f"{V1}/jobs/JUST-{n}")
            assert reply.status == 200, reply
            assert [p["reservation_id"] for p in reply.body["parts"]] == [reserved.body["id"]]
        assert embedded.api().get(f"{V1}/jobs/NO-SUCH-JOB").status == 404

    def test_a_shipment_never_created_is_still_404_soon(self, embedded: RunningSystem) -> None:
        started = time.monotonic()
        now = datetime.now(UTC)
        reply = embedded.api("service").post(
            f"{V1}/events", event_body("no-such-shipment", "picked_up", now)
        )
        assert reply.status == 404, reply
        assert embedded.api().get(f"{V1}/shipments/no-such-shipment/eta").status == 404
        assert embedded.api().get(f"{V1}/shipments/no-such-shipment/events").status == 404
        # Each waits a moment for the shipment to be heard of, and no longer.
        assert time.monotonic() - started < 15
