"""Shipments: planning, dispatch and delivery of what was reserved."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from services.shipments import views
from services.shipments.api import BLUEPRINTS
from services.shipments.models import BUS
from services.shipments.service import Shipments
from shared.clock import Clock
from shared.config import Settings
from shared.db import Database, upgrade
from shared.web import app_settings, create_service_app, service_context

NAME = "shipments"
MIGRATIONS = Path(__file__).with_name("migrations")


def open_service(settings: Settings, clock: Clock | None = None) -> Shipments:
    return Shipments(Database(settings.db_url(NAME), service=NAME, bus=BUS), clock)


def upgrade_database(settings: Settings) -> None:
    upgrade(NAME, settings.db_url(NAME), MIGRATIONS)


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    service: Shipments | None = None,
) -> Flask:
    settings = app_settings(config, settings)
    service = service or open_service(settings)
    app, api = create_service_app(
        NAME, __name__, settings=settings, db=service.db, title="Partsflow shipments"
    )
    service_context(app).extras["shipments"] = service
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    views.register(app)
    return app
