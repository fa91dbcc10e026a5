"""Tracking: tracking events, ETAs learned from history, delay alerts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from services.tracking import views
from services.tracking.api import BLUEPRINTS
from services.tracking.models import BUS
from services.tracking.service import Tracking
from shared.clock import Clock
from shared.config import Settings, load_settings
from shared.db import Database, upgrade
from shared.web import create_service_app, service_context

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


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    service: Tracking | None = None,
) -> Flask:
    settings = settings or load_settings(config)
    service = service or open_service(settings)
    app, api = create_service_app(
        NAME, __name__, settings=settings, db=service.db, title="Partsflow tracking"
    )
    service_context(app).extras["tracking"] = service
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    views.register(app)
    return app
