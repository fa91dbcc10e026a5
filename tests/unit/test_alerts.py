"""Alert rules: which problems a shipment has, and the sentence each one says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.tracking import alerts
from services.tracking.alerts import Replacement, ShipmentSituation
from services.tracking.eta import Checkpoint, Estimate

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def situation(**changes: object) -> ShipmentSituation:
    values: dict = {
        "shipment_id": "5f2c9a41-0000-4000-8000-000000000001",
        "status": "in_transit",
        "mode": "hand_carry",
        "estimate": Estimate(
            at(13), at(12), at(14), "promised", "", typical_hours=13, overdue_after=at(15)
        ),
        "risk": "on_track",
        "job_id": "JOB-7",
        "owner": "li.wei",
        "parts": ["XRT-2000"],
        "required_by": at(24),
        "dispatched_at": T0,
        "last_scan_at": at(1),
    }
    values.update(changes)
    return ShipmentSituation(**values)


def kinds(problems: list[alerts.Problem]) -> list[str]:
    return [p.kind for p in problems]


class TestShipmentProblems:
    def test_a_shipment_on_track_has_none(self) -> None:
        assert alerts.shipment_problems(situation(), at(2)) == []

    def test_late_takes_over_from_at_risk(self) -> None:
        at_risk = alerts.shipment_problems(situation(risk="at_risk"), at(2))
        late = alerts.shipment_problems(situation(risk="late"), at(2))
        assert kinds(at_risk) == ["at_risk"] and kinds(late) == ["late"]
        assert at_risk[0].subject == late[0].subject == situation().shipment_id

    def test_every_message_names_job_owner_problem_and_eta(self) -> None:
        (problem,) = alerts.shipment_problems(situation(risk="late"), at(2))
        assert problem.message.startswith("Job JOB-7 (owner li.wei): shipment 5f2c9a41")
        assert "XRT-2000" in problem.message
        assert problem.message.endswith("ETA now 20 Nov 19:00 UTC.")
        assert problem.message.count(". ") == 0  # one sentence

    def test_the_next_checkpoint_overdue_is_named(self) -> None:
        checkpoints = [
            Checkpoint("Kangding", at(3), at(3.2)),
            Checkpoint("Zheduo pass", at(5)),
            Checkpoint("Xinduqiao", at(7)),
        ]
        estimate = Estimate(
            at(14), at(13), at(16), "checkpoints", "", checkpoint_ahead=checkpoints[1]
        )
        s = situation(checkpoints=checkpoints, estimate=estimate, last_scan_at=at(3.2))
        assert alerts.shipment_problems(s, at(4.9)) == []
        (problem,) = alerts.shipment_problems(s, at(6))
        assert problem.kind == "checkpoint_overdue"
        assert problem.subject == f"{s.shipment_id}/Zheduo pass"
        assert "checkpoint Zheduo pass (2 of 3)" in problem.message
        assert "1.0 h overdue" in problem.message and "ETA now 20 Nov 20:00 UTC" in problem.message

    def test_stalled_after_the_silence_the_lane_allows(self) -> None:
        s = situation(
            mode="carrier",
            estimate=Estimate(
                at(24), at(20), at(30), "promised", "", typical_hours=24, overdue_after=at(30)
            ),
        )
        limit = alerts.stall_after_hours("carrier", 24)
        assert limit == 12
        assert alerts.shipment_problems(s, at(1 + limit - 0.1)) == []
        (problem,) = alerts.shipment_problems(s, at(1 + limit + 0.1))
        assert problem.kind == "stalled" and "no scan of shipment" in problem.message

    def test_exception_carries_the_carriers_note(self) -> None:
        (problem,) = alerts.shipment_problems(
            situation(status="exception", exception_note="address not found"), at(2)
        )
        assert problem.kind == "exception" and "(address not found)" in problem.message

    def test_delivered_late_and_in_time(self) -> None:
        late = situation(status="delivered", risk="delivered_late", delivered_at=at(26))
        (problem,) = alerts.shipment_problems(late, at(27))
        assert problem.kind == "delivered_late" and "2.0 h after" in problem.message
        in_time = situation(status="delivered", risk="delivered", delivered_at=at(13))
        assert alerts.shipment_problems(in_time, at(14)) == []

    def test_planned_shipments_only_risk(self) -> None:
        s = situation(status="planned", dispatched_at=None, last_scan_at=None, risk="late")
        assert kinds(alerts.shipment_problems(s, at(30))) == ["late"]

    def test_nothing_for_a_cancelled_shipment_whose_parts_no_longer_wait(self) -> None:
        assert alerts.shipment_problems(situation(status="cancelled"), at(30)) == []

    @pytest.mark.parametrize("risk", ["at_risk", "late"])
    def test_a_cancelled_shipment_whose_parts_still_wait_says_so(self, risk: str) -> None:
        # Silent and past its checkpoints, but nothing is on its way: only the deadline.
        (problem,) = alerts.shipment_problems(situation(status="cancelled", risk=risk), at(30))
        assert problem.kind == risk
        assert problem.message.startswith("Job JOB-7 (owner li.wei): shipment 5f2c9a41")
        assert "was cancelled and no other shipment carries its parts yet" in problem.message


class TestLost:
    def test_declared_lost_only_long_after_the_last_scan(self) -> None:
        estimate = Estimate(
            at(24), at(20), at(30), "promised", "", typical_hours=24, overdue_after=at(31)
        )
        s = situation(mode="carrier", estimate=estimate, last_scan_at=at(6))
        assert alerts.lost_by_silence(s, at(29)) is None  # silent 23 h, not yet overdue
        assert alerts.lost_by_silence(s, at(31.5)) is not None  # silent 25.5 h and overdue
        assert alerts.lost_by_silence(s, at(6 + 48.5)) is not None  # silent far too long
        assert alerts.lost_by_silence(situation(status="delivered"), at(500)) is None

    def test_a_dispatch_recorded_late_is_stalled_at_once_but_lost_only_later(self) -> None:
        estimate = Estimate(
            at(24), at(20), at(30), "promised", "", typical_hours=24, overdue_after=at(31)
        )
        # Dispatched at 0, recorded only at 40: silent 40 h, but heard of just now.
        s = situation(
            mode="carrier",
            estimate=estimate,
            dispatched_at=at(0),
            dispatch_heard_at=at(40),
            last_scan_at=None,
        )
        assert "stalled" in kinds(alerts.shipment_problems(s, at(40.1)))
        assert alerts.lost_by_silence(s, at(40.1)) is None
        why = alerts.lost_by_silence(s, at(40 + 24.5))
        assert why is not None and "no scan for 2.7 days" in why

    def test_the_lost_alert_says_where_the_replacement_comes_from(self) -> None:
        lost = situation(status="lost", risk="lost", lost_note="no scan for 26.0 h")
        asked = [Replacement("TEE-P7", "requested")]
        (problem,) = alerts.shipment_problems(replace(lost, replacements=asked), at(30))
        assert "is lost (no scan for 26.0 h)" in problem.message
        assert "being reserved" in problem.message
        found = [Replacement("TEE-P7", "confirmed", warehouse="CDU", eta=at(20))]
        (confirmed,) = alerts.shipment_problems(replace(lost, replacements=found), at(10))
        assert "reserved at CDU, ETA 21 Nov 02:00 UTC, in time for the required-by" in (
            confirmed.message
        )
        assert confirmed.fingerprint != problem.fingerprint

    def test_no_stock_anywhere_is_said_plainly(self) -> None:
        none = [Replacement("TEE-P7", "rejected")]
        (problem,) = alerts.shipment_problems(
            situation(status="lost", risk="lost", replacements=none), at(30)
        )
        assert "no TEE-P7 is in stock in any warehouse" in problem.message
        assert "outside Partsflow" in problem.message

    def test_a_replacement_lost_too_is_not_given_an_eta(self) -> None:
        gone = [Replacement("TEE-P7", "confirmed", "SHA", None, shipment_status="lost")]
        (problem,) = alerts.shipment_problems(
            situation(status="lost", risk="lost", replacements=gone), at(30)
        )
        assert "its replacement TEE-P7 from SHA was lost too" in problem.message
        assert "ETA" not in problem.message

    @pytest.mark.parametrize(
        ("ended", "words"),
        [("released", "was released"), ("preempted", "was taken for a machine-down job elsewhere")],
    )
    def test_a_replacement_set_aside_is_said_to_be_gone(self, ended: str, words: str) -> None:
        gone = [
            Replacement("TEE-P7", "confirmed", "SHA", at(20), reservation_status=ended),
        ]
        (problem,) = alerts.shipment_problems(
            situation(status="lost", risk="lost", replacements=gone), at(30)
        )
        assert problem.message.startswith("Job JOB-7 (owner li.wei): ")
        assert f"its replacement TEE-P7 reserved at SHA {words}, so none is on its way" in (
            problem.message
        )
        assert "another must be reserved by hand" in problem.message
        assert "ETA" not in problem.message

    def test_a_replacement_lost_too_says_whether_another_is_being_found(self) -> None:
        lost_too = Replacement("TEE-P7", "confirmed", "SHA", None, reservation_status="lost")
        alone, again = (
            alerts.shipment_problems(
                situation(status="lost", risk="lost", replacements=[r]), at(30)
            )[0]
            for r in (lost_too, replace(lost_too, replaced_again=True))
        )
        assert "was lost too: another must be reserved by hand" in alone.message
        assert "was lost too, and another is being found for it" in again.message
        assert alone.fingerprint != again.fingerprint

    def test_a_delivered_replacement_ends_the_problem(self) -> None:
        done = [Replacement("TEE-P7", "confirmed", "CDU", at(20), shipment_status="delivered")]
        s = situation(status="lost", risk="lost", replacements=done)
        assert alerts.shipment_problems(s, at(30)) == []

    def test_a_routine_job_is_left_to_people(self) -> None:
        routine = [Replacement("GEL-250", "not_requested")]
        (problem,) = alerts.shipment_problems(
            situation(status="lost", risk="lost", replacements=routine), at(30)
        )
        assert "reserve a replacement GEL-250 by hand" in problem.message


class TestRejectedReplacement:
    """What inventory's refusal of a replacement says exists instead."""

    def test_nothing_anywhere_is_said_plainly(self) -> None:
        rejection = {"reason": "not-enough-stock", "alternatives": [], "preemptible": []}
        assert alerts.rejection_words("TEE-P7", 1, rejection) is None

    def test_units_held_by_routine_reservations_are_named(self) -> None:
        held = [
            {"id": f"r{i}", "job_id": f"PM-{i}", "warehouse": wh, "quantity": 1}
            for i, wh in enumerate(("SHA", "CDU", "SHA", "PEK"), start=1)
        ]
        words = alerts.rejection_words(
            "TEE-P7", 1, {"reason": "not-enough-stock", "alternatives": [], "preemptible": held}
        )
        assert words is not None
        assert words.startswith("no TEE-P7 is free in any warehouse, but 4 are held by routine")
        assert "(job PM-1 at SHA, job PM-2 at CDU, job PM-3 at SHA and 1 more)" in words
        assert "a machine-down reservation may preempt" in words
        assert "in stock in any warehouse" not in words
        (problem,) = alerts.shipment_problems(
            situation(
                status="lost",
                risk="lost",
                replacements=[Replacement("TEE-P7", "rejected", detail=words)],
            ),
            at(30),
        )
        assert f"is lost; {words}." in problem.message

    def test_units_spread_over_warehouses_are_named(self) -> None:
        spread = [{"warehouse": "SHA", "available": 1}, {"warehouse": "CDU", "available": 1}]
        words = alerts.rejection_words(
            "TEE-P7", 2, {"reason": "not-enough-stock", "alternatives": spread}
        )
        assert words == (
            "no warehouse has 2 TEE-P7 free (SHA has 1, CDU has 1): reserve them by hand "
            "from several"
        )

    def test_units_reserved_for_other_jobs_are_not_called_none_in_stock(self) -> None:
        held = [{"warehouse": "CDU", "reserved": 1}, {"warehouse": "SHA", "reserved": 2}]
        words = alerts.rejection_words(
            "TEE-P7", 1, {"reason": "not-enough-stock", "alternatives": [], "held": held}
        )
        assert words == (
            "no TEE-P7 is free in any warehouse: 3 are reserved for other jobs (1 at CDU, "
            "2 at SHA); take one from them by hand if this job comes first, or find a unit "
            "outside Partsflow"
        )

    def test_another_reason_is_told_as_it_is(self) -> None:
        words = alerts.rejection_words(
            "TEE-P7", 1, {"reason": "not-found", "detail": "no part TEE-P7"}
        )
        assert (
            words
            == "inventory refused the replacement TEE-P7 (no part TEE-P7): reserve one by hand"
        )


class TestLowStock:
    def test_subject_and_words(self) -> None:
        problem = alerts.low_stock_problem("GEL-250", "CDU", 3, 20)
        assert problem.subject == "GEL-250@CDU"
        assert problem.message.startswith("Low stock: 3 GEL-250 available at CDU")
        assert alerts.severity("low_stock") == "warning"
        assert alerts.severity("lost") == "critical"


class TestTakenForAnotherJob:
    def test_names_job_owner_part_and_what_to_do(self) -> None:
        problem = alerts.taken_problem(
            "r-1",
            job_id="JOB-7",
            owner="li.wei",
            part_number="XRT-2000",
            quantity=1,
            warehouse="CDU",
            required_by=at(24),
        )
        assert (problem.kind, problem.subject) == ("at_risk", "r-1")
        assert problem.message == (
            "Job JOB-7 (owner li.wei): 1 XRT-2000 reserved at CDU was taken for a machine-down "
            "job elsewhere and nothing replaces it yet; reserve another to have it by its "
            "required-by 21 Nov 06:00 UTC."
        )
