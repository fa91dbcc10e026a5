"""Each service's migrations build exactly the schema its models describe, on SQLite
and on PostgreSQL: a model changed without its migration fails here, not in
production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import services.inventory.models as inventory_models
import services.shipments.models as shipments_models
import services.tracking.models as tracking_models
from services import bootstrap
from shared.config import SERVICES
from tests.conftest import make_settings

METADATA = {
    "inventory": inventory_models.Base.metadata,
    "shipments": shipments_models.Base.metadata,
    "tracking": tracking_models.Base.metadata,
}


def differences(settings: Any, service: str) -> list:
    engine = create_engine(settings.db_url(service))
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), METADATA[service])
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migrations_build_the_models_schema(database: str, tmp_path: Path, request) -> None:
    urls = {}
    if database == "postgresql":
        postgres = request.getfixturevalue("postgres")
        urls = {f"{name}_db_url": postgres.create(f"schema_{name}") for name in SERVICES}
    settings = make_settings(tmp_path, **urls)
    bootstrap.upgrade_databases(settings)
    assert {service: differences(settings, service) for service in SERVICES} == {
        service: [] for service in SERVICES
    }
