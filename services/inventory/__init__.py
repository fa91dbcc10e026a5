"""Inventory: warehouses, parts, stock, serial units, reservations and the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from services.inventory import views
from services.inventory.api import BLUEPRINTS
from services.inventory.models import BUS
from services.inventory.service import Inventory
from shared.clock import Clock
from shared.config import Settings
from shared.db import Database, upgrade
from shared.web import app_settings, create_service_app, service_context

NAME = "inventory"
MIGRATIONS = Path(__file__).with_name("migrations")


def open_service(settings: Settings, clock: Clock | None = None) -> Inventory:
    return Inventory(Database(settings.db_url(NAME), service=NAME, bus=BUS), clock)


def upgrade_database(settings: Settings) -> None:
    upgrade(NAME, settings.db_url(NAME), MIGRATIONS)


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    service: Inventory | None = None,
) -> Flask:
    settings = app_settings(config, settings)
    service = service or open_service(settings)
    app, api = create_service_app(
        NAME, __name__, settings=settings, db=service.db, title="Partsflow inventory"
    )
    service_context(app).extras["inventory"] = service
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    views.register(app)
    return app
