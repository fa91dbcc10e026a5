"""Low stock is flagged whenever a stock line is below its part's reorder point, however
it got there, and the flag clears when it no longer is (embedded system: inventory
announces, tracking keeps the ``low_stock`` alert)."""

from __future__ import annotations

import pytest

from tests.support import ApiClient, seed_catalogue

INV = "/inventory/api/v1"
ALERTS = "/tracking/api/v1/alerts"


@pytest.fixture
def api(embedded) -> ApiClient:
    client = embedded.api("logistics")
    seed_catalogue(client)
    return client


def low_stock_subjects(api: ApiClient, expected: set[str]) -> set[str]:
    """The open low_stock alerts' subjects, once they are ``expected``."""
    body = api.wait_for(
        ALERTS,
        lambda alerts: {a["subject"] for a in alerts} == expected,
        kind="low_stock",
        status="open",
    )
    return {a["subject"] for a in body}


class TestLowStockFollowsTheStockLine:
    def test_a_first_receipt_below_the_reorder_point_is_flagged(self, api: ApiClient) -> None:
        # GEL-250's reorder point is 5: a new stock line of 3 is low from the start.
        reply = api.post(
            f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 3}
        )
        assert reply.status == 201 and reply.body["stock"]["low"] is True
        assert low_stock_subjects(api, {"GEL-250@CDU"}) == {"GEL-250@CDU"}
        reply = api.post(
            f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 3}
        )
        assert reply.status == 201 and reply.body["stock"]["low"] is False
        assert low_stock_subjects(api, set()) == set()

    def test_the_alert_tells_the_level_as_it_is_now(self, api: ApiClient) -> None:
        # GEL-250's reorder point is 5: 3 received, then one found broken.
        api.post(f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 3})
        low_stock_subjects(api, {"GEL-250@CDU"})
        adjustment = {"warehouse": "CDU", "part_number": "GEL-250", "delta": -1, "reason": "broken"}
        assert api.post(f"{INV}/adjustments", adjustment).status == 201
        (alert,) = api.wait_for(
            ALERTS,
            lambda alerts: len(alerts) == 1 and "2 GEL-250 available" in alerts[0]["message"],
            kind="low_stock",
            status="open",
        )
        assert alert["subject"] == "GEL-250@CDU"

    def test_the_alert_names_a_moved_reorder_point(self, api: ApiClient) -> None:
        api.post(f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 3})
        low_stock_subjects(api, {"GEL-250@CDU"})
        assert api.patch(f"{INV}/parts/GEL-250", {"reorder_point": 4}).status == 200
        api.wait_for(
            ALERTS,
            lambda alerts: len(alerts) == 1 and "reorder point of 4" in alerts[0]["message"],
            kind="low_stock",
            status="open",
        )

    def test_stock_at_the_reorder_point_is_flagged_before_it_runs_out(self, api: ApiClient) -> None:
        api.post(f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 6})
        reply = api.post(
            f"{INV}/adjustments",
            {"warehouse": "CDU", "part_number": "GEL-250", "delta": -1, "reason": "broken"},
        )
        assert reply.status == 201 and reply.body["stock"]["available"] == 5
        assert reply.body["stock"]["low"] is True
        assert low_stock_subjects(api, {"GEL-250@CDU"}) == {"GEL-250@CDU"}

    def test_a_first_adjustment_below_the_reorder_point_is_flagged(self, api: ApiClient) -> None:
        reply = api.post(
            f"{INV}/adjustments",
            {"warehouse": "SHA", "part_number": "GEL-250", "delta": 4, "reason": "found"},
        )
        assert reply.status == 201 and reply.body["stock"]["low"] is True
        assert low_stock_subjects(api, {"GEL-250@SHA"}) == {"GEL-250@SHA"}

    def test_a_first_receipt_above_the_reorder_point_is_not(self, api: ApiClient) -> None:
        reply = api.post(
            f"{INV}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 6}
        )
        assert reply.status == 201 and reply.body["stock"]["low"] is False
        # Something flagged later shows the receipt above raised nothing meanwhile.
        api.post(f"{INV}/receipts", {"warehouse": "SHA", "part_number": "GEL-250", "quantity": 1})
        assert low_stock_subjects(api, {"GEL-250@SHA"}) == {"GEL-250@SHA"}

    def test_moving_the_reorder_point_flags_and_clears_stock_it_crosses(
        self, api: ApiClient
    ) -> None:
        for warehouse, quantity in (("CDU", 8), ("SHA", 20)):
            reply = api.post(
                f"{INV}/receipts",
                {"warehouse": warehouse, "part_number": "GEL-250", "quantity": quantity},
            )
            assert reply.status == 201 and reply.body["stock"]["low"] is False
        assert api.patch(f"{INV}/parts/GEL-250", {"reorder_point": 10}).status == 200
        assert low_stock_subjects(api, {"GEL-250@CDU"}) == {"GEL-250@CDU"}
        stock = api.get(f"{INV}/stock", part_number="GEL-250").body
        assert {row["warehouse"]: row["low"] for row in stock} == {"CDU": True, "SHA": False}
        assert api.patch(f"{INV}/parts/GEL-250", {"reorder_point": 30}).status == 200
        assert low_stock_subjects(api, {"GEL-250@CDU", "GEL-250@SHA"}) == {
            "GEL-250@CDU",
            "GEL-250@SHA",
        }
        assert api.patch(f"{INV}/parts/GEL-250", {"reorder_point": None}).status == 200
        assert low_stock_subjects(api, set()) == set()
