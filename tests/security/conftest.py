"""The whole system in this process (no background workers), its people, and the
routes of each app read from its URL map, so that a route added tomorrow is
checked by the same tests without anyone listing it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.test import Client

from services.embedded import EmbeddedSystem
from shared.auth import ROLES, UserStore
from tests.conftest import make_settings

SERVICES = ("inventory", "shipments", "tracking")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
PASSWORD = "correct-horse-battery"
CSRF_FIELD = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)


@dataclass(frozen=True)
class Route:
    """One method of one URL rule of one app."""

    service: str
    method: str
    rule: str
    permission: str | None

    @property
    def path(self) -> str:
        """The rule with every variable filled in by an id that names nothing."""
        return re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "no-such-id", self.rule)

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def routes_of(app: Flask, service: str) -> list[Route]:
    """Every method of every rule the app serves, with the permission its view asks
    for (``shared.web.requires`` and ``shared.pages.page_requires`` set it)."""
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        view_class = getattr(view, "view_class", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            handler = getattr(view_class, method.lower(), view) if view_class else view
            found.append(
                Route(service, method, rule.rule, getattr(handler, "required_permission", None))
            )
    return found


def is_api(route: Route) -> bool:
    return route.rule.startswith(f"/{route.service}/api/v1/")


@dataclass
class System:
    embedded: EmbeddedSystem
    tokens: dict[str, str]

    @property
    def settings(self) -> Any:
        return self.embedded.settings

    def client(self) -> Client:
        return Client(self.embedded.wsgi)

    def service(self, name: str) -> Any:
        return self.embedded.services[name]

    def routes(self) -> list[Route]:
        return [route for name, app in self.embedded.apps.items() for route in routes_of(app, name)]

    def announced(self) -> int:
        """Events written to the outboxes of all three services: every change of
        state is announced in the transaction that makes it, so a request that
        changed nothing leaves this count as it was."""
        total = 0
        for service in self.embedded.services.values():
            outbox = service.db.bus.outbox
            with service.db.reading() as session:
                total += session.scalar(select(func.count()).select_from(outbox)) or 0
        return total


def open_system(data_dir: Path, **overrides: Any) -> System:
    embedded = EmbeddedSystem(make_settings(data_dir, **overrides))
    users = UserStore(embedded.settings.users_path)
    tokens = {role: users.add(f"sec-{role}", role, PASSWORD) for role in ROLES}
    return System(embedded, tokens)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    opened = open_system(tmp_path_factory.mktemp("security"))
    yield opened
    opened.embedded.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_token(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1) or match.group(2)


def sign_in(client: Client, name: str, password: str = PASSWORD) -> Any:
    """Sign in through the login form, as a browser does; returns the answer."""
    form = client.get("/login")
    token = csrf_token(form.get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "name": name, "password": password})


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis, where production keeps the rate-limit counts."""
    import socket

    from tests.conftest import REQUIRE_SERVICES

    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        message = f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (PARTSFLOW_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
