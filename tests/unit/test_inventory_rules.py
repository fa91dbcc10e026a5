from __future__ import annotations

from services.inventory.rules import (
    MIN_LANE_HISTORY,
    OTHER_REGION_HOURS,
    SAME_REGION_HOURS,
    Source,
    low_stock_crossing,
    preemption_problem,
    rank_sources,
    reorder_point_crossing,
)


class TestRankSources:
    def test_same_region_wins_without_history(self) -> None:
        ranked = rank_sources(
            [Source(1, "SHA", "east", 9), Source(2, "CDU", "sichuan", 1)], "sichuan", {}
        )
        assert [r.source.code for r in ranked] == ["CDU", "SHA"]
        assert ranked[0].transit_hours == SAME_REGION_HOURS
        assert ranked[1].transit_hours == OTHER_REGION_HOURS

    def test_history_beats_the_default(self) -> None:
        history = {
            ("east", "courier", "EMS"): [10.0, 12.0, 11.0, 9.0, 13.0],
            ("sichuan", "carrier", "SF"): [30.0] * 5,
        }
        ranked = rank_sources(
            [Source(1, "SHA", "east", 1), Source(2, "CDU", "sichuan", 1)], "sichuan", history
        )
        assert [r.source.code for r in ranked] == ["SHA", "CDU"]
        assert (ranked[0].transit_hours, ranked[0].mode, ranked[0].carrier) == (
            11.0,
            "courier",
            "EMS",
        )

    def test_the_fastest_lane_from_a_region_is_its_route(self) -> None:
        history = {
            ("east", "carrier", "SLOWPOST"): [60.0] * 5,
            ("east", "courier", "EMS"): [1.0, 100.0, 3.0, 2.0, 4.0],
            # Fast, but too little history to be trusted.
            ("east", "hand_carry", None): [0.5] * (MIN_LANE_HISTORY - 1),
        }
        [ranked] = rank_sources([Source(1, "SHA", "east", 1)], "sichuan", history)
        assert (ranked.transit_hours, ranked.mode, ranked.carrier) == (3.0, "courier", "EMS")

    def test_without_history_no_route(self) -> None:
        [ranked] = rank_sources([Source(1, "SHA", "east", 1)], "sichuan", {})
        assert (ranked.mode, ranked.carrier) == (None, None)

    def test_a_few_odd_deliveries_do_not_make_a_lane(self) -> None:
        # Two transfers recorded delivered seconds after they left.
        history = {("east", "courier", "EMS"): [0.002] * (MIN_LANE_HISTORY - 1)}
        ranked = rank_sources(
            [Source(1, "SHA", "east", 1), Source(2, "VAN1", "sichuan", 1)], "sichuan", history
        )
        assert [r.source.code for r in ranked] == ["VAN1", "SHA"]
        assert ranked[1].transit_hours == OTHER_REGION_HOURS

    def test_ties_go_to_most_available(self) -> None:
        ranked = rank_sources([Source(1, "A", "east", 2), Source(2, "B", "east", 7)], "west", {})
        assert [r.source.code for r in ranked] == ["B", "A"]


class TestLowStockCrossing:
    def test_crossings_and_every_change_while_low(self) -> None:
        # At the reorder point is low: time to reorder while the last units are there.
        assert low_stock_crossing(3, 2, 2) == "low"
        assert low_stock_crossing(2, 0, 2) == "low"
        assert low_stock_crossing(1, 1, 2) is None
        assert low_stock_crossing(2, 3, 2) == "replenished"
        assert low_stock_crossing(5, 4, 2) is None

    def test_no_reorder_point_no_events(self) -> None:
        assert low_stock_crossing(5, 0, None) is None

    def test_a_new_stock_line_was_not_low(self) -> None:
        assert low_stock_crossing(None, 2, 2) == "low"
        assert low_stock_crossing(None, 3, 2) is None
        assert low_stock_crossing(None, 0, None) is None

    def test_a_moved_reorder_point_crosses_like_moved_stock(self) -> None:
        assert reorder_point_crossing(4, 2, 4) == "low"
        assert reorder_point_crossing(4, 4, 3) == "replenished"
        assert reorder_point_crossing(4, None, 5) == "low"
        assert reorder_point_crossing(4, 5, None) == "replenished"
        # Low before and after: announced again, the alert names the new reorder point.
        assert reorder_point_crossing(4, 6, 5) == "low"
        assert reorder_point_crossing(4, 6, 6) is None
        assert reorder_point_crossing(6, 5, 4) is None


class TestPreemption:
    def test_only_machine_down_preempts(self) -> None:
        assert preemption_problem("urgent", ["r1"])
        assert preemption_problem("machine_down", ["r1"]) is None
        assert preemption_problem("routine", []) is None

    def test_a_reservation_named_twice(self) -> None:
        assert preemption_problem("machine_down", ["r1", "r1"])
