"""Tracking's metrics count the alerts the scheduler and the handlers raised."""

from __future__ import annotations

from tests.conftest import wait_until
from tests.support import seed_catalogue


def test_alerts_show_in_the_metrics(embedded) -> None:
    api = embedded.api("logistics")
    seed_catalogue(api)
    api.post(
        "/inventory/api/v1/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 6}
    )
    api.post(
        "/inventory/api/v1/adjustments",
        {"warehouse": "CDU", "part_number": "GEL-250", "delta": -3, "reason": "count"},
    )

    def metrics() -> str:
        return api.get("/tracking/metrics").body

    wait_until(
        lambda: 'partsflow_alerts{kind="low_stock",status="open"} 1.0' in metrics(),
        timeout=10,
        message="the low-stock alert in the metrics",
    )
    assert "partsflow_alerts_raised_total 1.0" in metrics()
