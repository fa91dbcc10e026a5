"""The lost-part rescue: a lost shipment of a machine_down or urgent job makes
tracking ask inventory for a replacement, once, from whichever warehouse can deliver
first, and the lost alert says what came of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from shared.config import Settings
from tests.integration.tracking_support import (
    V1,
    TrackingUnderTest,
    at,
    event_body,
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


def probe_on_its_way(tracking: TrackingUnderTest, priority: str = "machine_down") -> tuple:
    probe = reservation_data(
        job_id="JOB-TEE",
        part_number="TEE-P7",
        warehouse="SHA",
        warehouse_region="east-china",
        priority=priority,
        owner="dr.chen",
        required_by=iso(at(48)),
        site={"name": "Children's Heart Centre", "region": "sichuan"},
        serials=["TEE-S-0001"],
    )
    tracking.reservation("confirmed", probe)
    shipment = shipment_data(
        job_id="JOB-TEE",
        owner="dr.chen",
        priority=priority,
        origin="SHA",
        origin_region="east-china",
        destination={"site": "Children's Heart Centre", "warehouse": None, "region": "sichuan"},
        mode="carrier",
        carrier="SF",
        tracking_number="SF-TEE-1",
        promised_delivery_at=iso(at(24)),
        required_by=iso(at(48)),
        lines=[{"part_number": "TEE-P7", "quantity": 1, "reservation_id": probe["id"]}],
    )
    tracking.shipment("dispatched", shipment)
    return probe, shipment


def probe_from_chengdu(**changes: object) -> dict:
    """A probe for the same job, reserved at CDU (a replacement, or one made by hand)."""
    return reservation_data(
        **{
            "job_id": "JOB-TEE",
            "part_number": "TEE-P7",
            "warehouse": "CDU",
            "warehouse_region": "sichuan",
            "owner": "dr.chen",
            "required_by": iso(at(48)),
            "site": {"name": "Children's Heart Centre", "region": "sichuan"},
            **changes,
        }
    )


def lose(tracking: TrackingUnderTest, shipment: dict) -> None:
    tracking.clock.set(at(20))
    body = event_body(shipment["id"], "lost", at(19), note="parcel missing at the Xi'an hub")
    assert tracking.api("service").post(f"{V1}/events", body).status == 201


def lost_with_none_anywhere(tracking: TrackingUnderTest) -> tuple[dict, dict]:
    """The probe lost on its way, and inventory's answer to the rescue: no TEE-P7 in
    any warehouse."""
    probe, shipment = probe_on_its_way(tracking)
    lose(tracking, shipment)
    (command,) = tracking.published("inventory.reserve")
    tracking.deliver(
        "inventory.reservation.rejected",
        {"command_id": command["id"], "reason": "not-enough-stock", "alternatives": []},
        correlation_id=command["id"],
        source="partsflow/inventory",
    )
    return probe, shipment


def replaced_from_chengdu(tracking: TrackingUnderTest) -> tuple[dict, dict, dict]:
    """The probe lost on its way, and inventory's answer to the rescue: a replacement
    reserved at CDU."""
    probe, shipment = probe_on_its_way(tracking)
    lose(tracking, shipment)
    (command,) = tracking.published("inventory.reserve")
    replacement = probe_from_chengdu(replaces=probe["id"])
    tracking.deliver(
        "inventory.reservation.confirmed",
        replacement,
        correlation_id=command["id"],
        source="partsflow/inventory",
    )
    return probe, shipment, replacement


class TestRescue:
    def test_a_replacement_is_asked_for_once(self, tracking: TrackingUnderTest) -> None:
        probe, shipment = probe_on_its_way(tracking)
        lose(tracking, shipment)
        tracking.service.scan()
        tracking.reservation("lost", {**probe, "status": "lost", "version": 2})
        (command,) = tracking.published("inventory.reserve")
        data = command["data"]
        assert data["replaces"] == probe["id"]
        assert "warehouse" not in data
        assert data["request_id"] == f"replace-{probe['id']}"
        assert {k: data[k] for k in ("job_id", "part_number", "quantity", "priority")} == {
            "job_id": "JOB-TEE",
            "part_number": "TEE-P7",
            "quantity": 1,
            "priority": "machine_down",
        }
        assert data["site"] == {"name": "Children's Heart Centre", "region": "sichuan"}
        assert (data["owner"], data["required_by"]) == ("dr.chen", iso(at(48)))
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["job_id"] == "JOB-TEE" and alert["owner"] == "dr.chen"
        assert "(parcel missing at the Xi'an hub)" in alert["message"]
        assert "a replacement TEE-P7 is being reserved" in alert["message"]

    def test_the_confirmed_replacement_and_its_eta_are_named(
        self, tracking: TrackingUnderTest
    ) -> None:
        probe, _, replacement = replaced_from_chengdu(tracking)
        (alert,) = tracking.open_alerts(kind="lost")
        # No shipment yet and no history from CDU: a carrier's day within a region.
        assert (
            "reserved at CDU, ETA 22 Nov 02:00 UTC, in time for the required-by"
            in (alert["message"])
        )
        updated = tracking.published("tracking.alert.updated")
        assert updated[-1]["data"]["id"] == alert["id"]
        # Its shipment is planned as usual; the job shows it, with its ETA.
        planned = shipment_data(
            status="planned",
            dispatched_at=None,
            job_id="JOB-TEE",
            mode="courier",
            promised_delivery_at=None,
            destination={"site": "Children's Heart Centre", "warehouse": None, "region": "sichuan"},
            lines=[{"part_number": "TEE-P7", "quantity": 1, "reservation_id": replacement["id"]}],
        )
        tracking.shipment("planned", planned)
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-TEE").body
        by_reservation = {p["reservation_id"]: p for p in job["parts"]}
        assert by_reservation[probe["id"]]["risk"] == "lost"
        assert by_reservation[probe["id"]]["reason"].endswith(
            "will not arrive; a replacement TEE-P7 is reserved at CDU, ETA 21 Nov 08:00 UTC, "
            "in time for the "
            "required-by 22 Nov 06:00 UTC."
        )
        fresh = by_reservation[replacement["id"]]
        assert fresh["replaces"] == probe["id"]
        assert (fresh["shipment_id"], fresh["shipment_status"]) == (planned["id"], "planned")
        assert fresh["eta"] is not None
        # The lost part is replaced: the job is judged by the replacement.
        assert job["risk"] == fresh["risk"] == "on_track"
        (alert,) = tracking.open_alerts(kind="lost")
        assert (
            "reserved at CDU, ETA 21 Nov 08:00 UTC, in time for the required-by"
            in (alert["message"])
        )
        # Once the replacement is delivered, the lost alert has nothing left to say.
        tracking.shipment(
            "dispatched", {**planned, "status": "in_transit", "dispatched_at": iso(at(21))}
        )
        tracking.clock.set(at(30))
        tracking.api("service").post(f"{V1}/events", event_body(planned["id"], "delivered", at(29)))
        assert tracking.open_alerts(kind="lost") == []
        # The lost part's reason says so too, not the ETA it had on its way.
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-TEE").body
        lost = next(p for p in job["parts"] if p["reservation_id"] == probe["id"])
        assert lost["reason"].endswith(
            "its replacement TEE-P7 from CDU was delivered on 21 Nov 11:00 UTC."
        ), lost["reason"]

    def test_no_stock_anywhere_is_said_plainly(self, tracking: TrackingUnderTest) -> None:
        probe, shipment = probe_on_its_way(tracking)
        lose(tracking, shipment)
        (command,) = tracking.published("inventory.reserve")
        rejected = {
            "command_id": command["id"],
            "request_id": command["data"]["request_id"],
            "status": "rejected",
            "reason": "not-enough-stock",
            "detail": "not enough TEE-P7 available in any warehouse for 1",
            "job_id": "JOB-TEE",
            "part_number": "TEE-P7",
            "alternatives": [],
        }
        tracking.deliver(
            "inventory.reservation.rejected",
            rejected,
            correlation_id=command["id"],
            source="partsflow/inventory",
        )
        (alert,) = tracking.open_alerts(kind="lost")
        assert "no TEE-P7 is in stock in any warehouse" in alert["message"]
        assert "found outside Partsflow" in alert["message"]
        # The engineer's view of the job says it too, under the lost part.
        _, lost = job_part(tracking, probe["id"])
        assert lost["reason"] == (
            "Lost on the way: this shipment will not arrive; no TEE-P7 is in stock in any "
            "warehouse: a unit must be found outside Partsflow."
        )

    def test_stock_held_by_routine_reservations_is_not_called_absent(
        self, tracking: TrackingUnderTest
    ) -> None:
        _, shipment = probe_on_its_way(tracking)
        lose(tracking, shipment)
        (command,) = tracking.published("inventory.reserve")
        held = [
            {
                "id": f"r-{job}",
                "job_id": job,
                "warehouse": warehouse,
                "quantity": 1,
                "required_by": iso(at(300)),
                "owner": "dr.wu",
            }
            for job, warehouse in (("PM-31", "SHA"), ("PM-32", "CDU"))
        ]
        tracking.deliver(
            "inventory.reservation.rejected",
            {
                "command_id": command["id"],
                "reason": "not-enough-stock",
                "detail": "not enough TEE-P7 available in any warehouse for 1",
                "alternatives": [],
                "preemptible": held,
            },
            correlation_id=command["id"],
            source="partsflow/inventory",
        )
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["owner"] == "dr.chen"
        assert (
            "no TEE-P7 is free in any warehouse, but 2 are held by routine reservations "
            "(job PM-31 at SHA, job PM-32 at CDU) that a machine-down reservation may preempt"
        ) in alert["message"]
        assert "in stock in any warehouse" not in alert["message"]
        assert "outside Partsflow" not in alert["message"]
        # Stock coming in elsewhere does not make it "none was in stock".
        tracking.deliver("inventory.stock.received", probe_received("URC"), source="inventory")
        (after,) = tracking.open_alerts(kind="lost")
        assert after["message"] == alert["message"]

    @pytest.mark.parametrize(
        ("ended", "words"),
        [("released", "was released"), ("preempted", "was taken for a machine-down job elsewhere")],
    )
    def test_a_replacement_set_aside_is_said_to_be_gone_until_another_is_reserved(
        self, tracking: TrackingUnderTest, ended: str, words: str
    ) -> None:
        probe, _, replacement = replaced_from_chengdu(tracking)
        (alert,) = tracking.open_alerts(kind="lost")
        assert "a replacement TEE-P7 is reserved at CDU" in alert["message"]
        tracking.reservation(ended, {**replacement, "status": ended, "version": 2})
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["owner"] == "dr.chen" and "(owner dr.chen)" in alert["message"]
        assert (
            f"its replacement TEE-P7 reserved at CDU {words}, so none is on its way: another "
            "must be reserved by hand"
        ) in alert["message"]
        assert "ETA" not in alert["message"]
        assert tracking.published("tracking.alert.updated")[-1]["data"]["id"] == alert["id"]
        job = tracking.api("engineer").get(f"{V1}/jobs/JOB-TEE").body
        assert job["risk"] == "lost"
        # Reserved again by hand (from stock received since, say): that one answers.
        by_hand = probe_from_chengdu(warehouse="CTU")
        answers_by_hand(tracking, by_hand, probe, "a replacement TEE-P7 is reserved at CTU")

    def test_a_replacement_lost_too_is_replaced_in_turn(self, tracking: TrackingUnderTest) -> None:
        _, shipment, replacement = replaced_from_chengdu(tracking)
        carried = shipment_data(
            job_id="JOB-TEE",
            owner="dr.chen",
            mode="courier",
            promised_delivery_at=None,
            dispatched_at=iso(at(20)),
            required_by=iso(at(48)),
            destination={"site": "Children's Heart Centre", "warehouse": None, "region": "sichuan"},
            lines=[{"part_number": "TEE-P7", "quantity": 1, "reservation_id": replacement["id"]}],
        )
        tracking.shipment("dispatched", carried)
        tracking.clock.set(at(23))
        body = event_body(carried["id"], "lost", at(22), note="van stolen")
        assert tracking.api("service").post(f"{V1}/events", body).status == 201
        tracking.reservation("lost", {**replacement, "status": "lost", "version": 2})
        _, again = tracking.published("inventory.reserve")
        assert again["data"]["replaces"] == replacement["id"]
        alert = next(a for a in tracking.open_alerts(kind="lost") if a["subject"] == shipment["id"])
        assert (
            "its replacement TEE-P7 from CDU was lost too, and another is being found for it"
        ) in alert["message"]
        assert "ETA" not in alert["message"]

    def test_a_replacement_reserved_by_hand_answers_the_rescue(
        self, tracking: TrackingUnderTest
    ) -> None:
        probe, _ = lost_with_none_anywhere(tracking)
        (alert,) = tracking.open_alerts(kind="lost")
        assert "no TEE-P7 is in stock in any warehouse" in alert["message"]
        # A probe arrives at CDU: the alert says so, and nothing is reserved by itself.
        tracking.deliver("inventory.stock.received", probe_received("CDU"), source="inventory")
        (alert,) = tracking.open_alerts(kind="lost")
        assert (
            "none was in stock when it was lost, but 1 TEE-P7 came into stock at CDU on "
            "21 Nov 02:00 UTC: reserve by hand for the job"
        ) in alert["message"]
        assert "in any warehouse" not in alert["message"]
        assert len(tracking.published("inventory.reserve")) == 1
        assert tracking.published("tracking.alert.updated")[-1]["data"]["id"] == alert["id"]
        # Logistics reserves it for the job by hand.
        by_hand = probe_from_chengdu()
        answers_by_hand(tracking, by_hand, probe, "reserved at CDU")
        # A later version of it (its shipment planned, say) keeps it a replacement.
        tracking.reservation("confirmed", {**by_hand, "version": 2, "shipment_id": "s-9"})
        _, fresh = job_part(tracking, by_hand["id"])
        assert fresh["replaces"] == probe["id"]

    def test_stock_come_in_since_says_when_it_could_arrive_against_the_required_by(
        self, tracking: TrackingUnderTest
    ) -> None:
        lost_with_none_anywhere(tracking)
        chengdu = {"code": "CTU", "name": "Chengdu", "region": "sichuan", "kind": "depot"}
        tracking.deliver("inventory.warehouse.created", chengdu, source="partsflow/inventory")
        tracking.deliver("inventory.stock.received", probe_received("CTU"), source="inventory")
        (alert,) = tracking.open_alerts(kind="lost")
        # Within one region a carrier takes about a day, with no history to say better;
        # the scan is 48 h after the start, the probe came in at 20 h.
        assert (
            "1 TEE-P7 came into stock at CTU on 21 Nov 02:00 UTC; leaving then, it could "
            "arrive on 22 Nov 02:00 UTC"
        ) in alert["message"]
        assert "in time for the required-by 22 Nov 06:00 UTC: reserve by hand" in alert["message"]

    def test_the_lost_alert_follows_the_job_to_its_new_owner(
        self, tracking: TrackingUnderTest
    ) -> None:
        _, shipment = probe_on_its_way(tracking, priority="routine")
        lose(tracking, shipment)
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["owner"] == "dr.chen"
        # The job is handed over: its next reservation names another owner.
        tracking.reservation(
            "confirmed", probe_from_chengdu(part_number="GEL-250", owner="dr.wang")
        )
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["owner"] == "dr.wang" and "(owner dr.wang)" in alert["message"]

    def test_the_replacement_is_asked_for_whoever_holds_the_job_now(
        self, tracking: TrackingUnderTest
    ) -> None:
        _, shipment = probe_on_its_way(tracking)
        # Handed over (and moved) before the loss, by the job's next reservation.
        tracking.reservation(
            "confirmed",
            probe_from_chengdu(part_number="GEL-250", owner="dr.wang", required_by=iso(at(60))),
        )
        lose(tracking, shipment)
        (command,) = tracking.published("inventory.reserve")
        assert command["data"]["owner"] == "dr.wang"
        assert datetime.fromisoformat(command["data"]["required_by"]) == at(60)
        (alert,) = tracking.open_alerts(kind="lost")
        assert alert["owner"] == "dr.wang"

    def test_someone_elses_rejection_changes_nothing(self, tracking: TrackingUnderTest) -> None:
        _, shipment = probe_on_its_way(tracking)
        lose(tracking, shipment)
        tracking.deliver(
            "inventory.reservation.rejected",
            {"command_id": "field-service-1", "reason": "not-enough-stock"},
            correlation_id="field-service-1",
        )
        (alert,) = tracking.open_alerts(kind="lost")
        assert "being reserved" in alert["message"]

    def test_a_routine_job_is_left_to_people(self, tracking: TrackingUnderTest) -> None:
        _, shipment = probe_on_its_way(tracking, priority="routine")
        lose(tracking, shipment)
        assert tracking.published("inventory.reserve") == []
        (alert,) = tracking.open_alerts(kind="lost")
        assert "reserve a replacement TEE-P7 by hand" in alert["message"]

    def test_inventory_saying_lost_first_starts_the_rescue_too(
        self, tracking: TrackingUnderTest
    ) -> None:
        probe, shipment = probe_on_its_way(tracking, priority="urgent")
        tracking.reservation("lost", {**probe, "status": "lost", "version": 2})
        (command,) = tracking.published("inventory.reserve")
        assert command["data"]["replaces"] == probe["id"]
        lose(tracking, shipment)
        assert len(tracking.published("inventory.reserve")) == 1


class TestLostReportAfterTheDelivery:
    """Shipments recorded the delivery; a carrier's late "lost" report reaches tracking
    either after it heard of the delivery, or just before."""

    def test_a_shipment_known_delivered_is_not_lost_nor_replaced(
        self, tracking: TrackingUnderTest
    ) -> None:
        _, shipment = probe_on_its_way(tracking)
        tracking.clock.set(at(19))
        delivered = {**shipment, "status": "delivered", "delivered_at": iso(at(18))}
        tracking.shipment("delivered", delivered)
        lose(tracking, shipment)
        eta = tracking.api().get(f"{V1}/shipments/{shipment['id']}/eta").body
        assert (eta["status"], eta["risk"]) == ("delivered", "delivered")
        assert tracking.alerts(kind="lost") == []
        assert tracking.published("inventory.reserve") == []

    def test_the_lost_alert_resolves_no_earlier_than_it_was_raised(
        self, tracking: TrackingUnderTest
    ) -> None:
        _, shipment = probe_on_its_way(tracking)
        lose(tracking, shipment)
        (raised,) = tracking.open_alerts(kind="lost")
        # The delivery is applied with a clock reading a moment older than the one the
        # loss was judged at (read before it waited for the shipment, or on another
        # host whose clock is a little behind).
        tracking.clock.set(at(20) - timedelta(seconds=2))
        delivered = {**shipment, "status": "delivered", "delivered_at": iso(at(18))}
        tracking.shipment("delivered", delivered)
        (alert,) = tracking.alerts(kind="lost")
        assert alert["status"] == "resolved", alert
        assert alert["raised_at"] == raised["raised_at"] == iso(at(20))
        resolved_at = datetime.fromisoformat(alert["resolved_at"])
        assert resolved_at >= datetime.fromisoformat(alert["raised_at"])
        (announced,) = [
            m["data"]
            for m in tracking.published("tracking.alert.resolved")
            if m["data"]["id"] == alert["id"]
        ]
        assert announced["resolved_at"] == alert["resolved_at"]


def probe_received(warehouse: str) -> dict:
    """``inventory.stock.received``: a TEE-P7 probe taken into ``warehouse``."""
    stock = {"on_hand": 1, "reserved": 0, "available": 1}
    return {
        "warehouse": warehouse,
        "part_number": "TEE-P7",
        "quantity": 1,
        "stock": {"warehouse": warehouse, "part_number": "TEE-P7", **stock},
    }


def job_part(tracking: TrackingUnderTest, reservation_id: str) -> tuple[dict, dict]:
    """JOB-TEE's view as its engineer sees it, and its part for ``reservation_id``."""
    job = tracking.api("engineer").get(f"{V1}/jobs/JOB-TEE").body
    return job, next(p for p in job["parts"] if p["reservation_id"] == reservation_id)


def answers_by_hand(
    tracking: TrackingUnderTest, by_hand: dict, lost: dict, alert_words: str
) -> None:
    """``by_hand``, reserved by people for the job, answers the rescue of ``lost``: the
    lost alert says so, and the job shows it as the replacement, no longer lost."""
    tracking.reservation("confirmed", by_hand)
    (alert,) = tracking.open_alerts(kind="lost")
    assert alert_words in alert["message"]
    job, fresh = job_part(tracking, by_hand["id"])
    assert fresh["replaces"] == lost["id"]
    assert job["risk"] == fresh["risk"] != "lost"
