"""Tracking: tracking events, ETAs learned from history, delay alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.tracking import views
from services.tracking.api import BLUEPRINTS
from services.tracking.models import BUS
from services.tracking.service import Tracking
from shared.clock import Clock
from shared.config import Settings
from shared.db import Database, upgrade
from shared.web import app_settings, create_service_app, service_context

NAME = "tracking"
MIGRATIONS = Path(__file__).with_name("migrations")


def open_service(settings: Settings, clock: Clock | None = None) -> Tracking:
    return Tracking(
        Database(settings.db_url(NAME), service=NAME, bus=BUS),
        clock,
        eta_step_minutes=settings.eta_step_minutes,
    )


def upgrade_database(settings: Settings) -> None:
    upgrade(NAME, settings.db_url(NAME), MIGRATIONS)


class AlertsCollector:
    """Alerts by kind and status, counted in the database at scrape time (the
    scheduler that raises them runs in the worker)."""

    def __init__(self, service: Tracking) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        try:
            counts = self.service.alert_counts()
        except Exception:  # a scrape must not fail because the database did
            return []
        alerts = GaugeMetricFamily(
            "partsflow_alerts", "Alerts by kind and status", labels=["kind", "status"]
        )
        for (kind, status), count in sorted(counts.items()):
            alerts.add_metric([kind, status], count)
        raised = CounterMetricFamily("partsflow_alerts_raised", "Alerts raised, all kinds")
        raised.add_metric([], sum(counts.values()))
        return [alerts, raised]


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    service: Tracking | None = None,
) -> Flask:
    settings = app_settings(config, settings)
    service = service or open_service(settings)
    app, api = create_service_app(
        NAME, __name__, settings=settings, db=service.db, title="Partsflow tracking"
    )
    context = service_context(app)
    context.extras["tracking"] = service
    context.registry.register(AlertsCollector(service))
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    views.register(app)
    return app
