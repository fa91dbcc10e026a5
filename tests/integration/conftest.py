from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import services.inventory as inventory_pkg
from services.inventory.service import Inventory
from shared.config import Settings
from tests.support import ApiClient, make_tokens


@dataclass
class InventoryUnderTest:
    settings: Settings
    service: Inventory
    app: Any
    tokens: dict[str, str]

    def api(self, role: str = "admin") -> ApiClient:
        return ApiClient(self.app.test_client(), self.tokens.get(role))


def start_inventory(settings: Settings) -> InventoryUnderTest:
    inventory_pkg.upgrade_database(settings)
    service = inventory_pkg.open_service(settings)
    app = inventory_pkg.create_app(settings=settings, service=service)
    return InventoryUnderTest(settings, service, app, make_tokens(settings))


@pytest.fixture
def inventory(settings: Settings) -> Iterator[InventoryUnderTest]:
    system = start_inventory(settings)
    yield system
    system.service.db.dispose()
