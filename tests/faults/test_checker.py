"""The checker itself: how it classifies what a test submitted (no servers needed)."""

from __future__ import annotations

from tests.faults.checker import History


class TestHistoryCheck:
    def test_classifies_each_business_id(self) -> None:
        history = History()
        for key in ("once", "never", "twice"):
            history.acknowledged(key)
        history.indeterminate("maybe-taken")
        history.indeterminate("not-taken")
        verdict = history.check(
            {"once": 1, "twice": 2, "maybe-taken": 1, "nobody-asked": 1, "never": 0}
        )
        assert verdict.ok == {"once", "maybe-taken"}
        assert verdict.lost == {"never"}
        assert verdict.duplicated == {"twice": 2}
        assert verdict.unexpected == {"nobody-asked"}
        assert verdict.not_taken == {"not-taken"}
        assert not verdict.valid

    def test_an_answer_after_a_failed_try_counts_as_acknowledged(self) -> None:
        history = History()
        history.indeterminate("retried")
        history.acknowledged("retried")
        history.indeterminate("retried")
        assert history.acknowledged_keys == {"retried"}
        assert history.check({}).lost == {"retried"}
        assert history.check({"retried": 1}).valid
