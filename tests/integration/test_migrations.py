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
import services.shipments as shipments_service
import services.shipments.models as shipments_models
import services.tracking as tracking_service
import services.tracking.models as tracking_models
from services import bootstrap
from shared.config import SERVICES
from shared.db import upgrade
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


def rows_across_migration(
    request: Any,
    tmp_path: Path,
    database: str,
    service: Any,
    before: str,
    inserts: list[str],
    query: str,
) -> list[tuple]:
    """Rows written at migration ``before``, read back at the head: what a data
    migration made of them."""
    name = service.__name__.rsplit(".", 1)[1]
    url = make_settings(tmp_path).db_url(name)
    if database == "postgresql":
        url = request.getfixturevalue("postgres").create(f"data_{name}_{before}")
    upgrade(name, url, service.MIGRATIONS, before)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for insert in inserts:
                conn.exec_driver_sql(insert)
        upgrade(name, url, service.MIGRATIONS)
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(query).all()]
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_reservations_known_before_their_sites_were_kept_take_them_from_their_shipment(
    database: str, tmp_path: Path, request
) -> None:
    columns = (
        "id, status, origin, destination_site, destination_region, mode, version, "
        "created_at, updated_at"
    )
    rows = rows_across_migration(
        request,
        tmp_path,
        database,
        shipments_service,
        "0006",
        [
            "INSERT INTO known_reservations (id, version, status, job_id, part_number, "
            "quantity, warehouse) VALUES ('r-1', 1, 'confirmed', 'JOB-1', 'XRT-2000', 1, "
            "'CDU'), ('r-2', 1, 'confirmed', 'JOB-2', 'GEL-250', 2, 'CDU'), "
            "('r-3', 1, 'confirmed', 'JOB-1', 'GEL-250', 1, 'CDU')",
            f"INSERT INTO shipments ({columns}) VALUES ('s-1', 'planned', 'CDU', "
            "'Ganzi County Hospital', 'sichuan', 'carrier', 1, "
            "'2026-11-20 08:00:00', '2026-11-20 08:00:00')",
            "INSERT INTO shipment_lines (shipment_id, part_number, quantity, "
            "reservation_id, serials) VALUES ('s-1', 'XRT-2000', 1, 'r-1', 'C-1'), "
            "('s-1', 'GEL-250', 1, 'r-3', '')",
        ],
        "SELECT id, site_name, site_region, serials FROM known_reservations ORDER BY id",
    )
    assert rows == [
        ("r-1", "Ganzi County Hospital", "sichuan", "C-1"),
        ("r-2", None, None, None),
        # A line that named no units says nothing of them.
        ("r-3", "Ganzi County Hospital", "sichuan", None),
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_lanes_learnt_before_are_kept_by_their_names_key(
    database: str, tmp_path: Path, request
) -> None:
    rows = rows_across_migration(
        request,
        tmp_path,
        database,
        tracking_service,
        "0007",
        [
            "INSERT INTO lane_transits (shipment_id, origin_region, destination_region, "
            "mode, carrier, hours, delivered_at) VALUES "
            "('s-1', 'East-China', ' Tibet', 'carrier', 'EMS', 40, '2026-11-20 08:00:00'), "
            "('s-2', 'east-china', 'tibet', 'courier', '', 30, '2026-11-20 08:00:00')"
        ],
        "SELECT shipment_id, origin_region, destination_region, carrier "
        "FROM lane_transits ORDER BY shipment_id",
    )
    assert rows == [
        ("s-1", "east-china", "tibet", "ems"),
        ("s-2", "east-china", "tibet", ""),
    ]
