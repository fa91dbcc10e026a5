from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from services import bootstrap
from shared.config import Settings


@pytest.fixture
def served(settings: Settings) -> Iterator[Callable[[str], int]]:
    """The status the service that owns a path answers it with (on SQLite, in-process
    bus), so that a probe in a manifest is known to point at a real page."""
    apps = {
        name: module.create_app(settings=settings) for name, module in bootstrap.SERVICES.items()
    }

    def status(path: str) -> int:
        service = path.lstrip("/").split("/", 1)[0]
        return apps[service].test_client().get(path).status_code

    yield status
    for app in apps.values():
        app.extensions["partsflow"].db.dispose()
