"""Who may write what: every write endpoint of the JSON API, read from the apps' URL
maps, against no token, a forged token and a token of every role."""

from __future__ import annotations

from shared.auth import PERMISSIONS, ROLES
from shared.web import PROBLEM_JSON
from tests.security.conftest import (
    WRITE_METHODS,
    System,
    bearer,
    csrf_token,
    is_api,
    sign_in,
)

LISTS = ("/inventory/api/v1/stock", "/shipments/api/v1/shipments", "/tracking/api/v1/alerts")


def api_writes(system: System) -> list:
    writes = [r for r in system.routes() if is_api(r) and r.method in WRITE_METHODS]
    assert len(writes) >= 12, "the URL maps lost their write endpoints"
    return writes


class TestEveryApiEndpointIsGuarded:
    def test_every_api_view_names_the_permission_it_needs(self, system: System) -> None:
        unguarded = [str(r) for r in system.routes() if is_api(r) and r.permission is None]
        assert unguarded == []

    def test_every_permission_asked_for_belongs_to_some_role(self, system: System) -> None:
        granted = set().union(*PERMISSIONS.values())
        asked = {r.permission for r in system.routes() if r.permission}
        assert asked <= granted


class TestWritesWithoutAToken:
    def test_no_token_is_401_problem(self, system: System) -> None:
        client = system.client()
        before = system.announced()
        wrong = []
        for route in api_writes(system):
            response = client.open(route.path, method=route.method, json={})
            if (
                response.status_code != 401
                or response.mimetype != PROBLEM_JSON
                or not response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            ):
                wrong.append(f"{route}: {response.status_code} {response.mimetype}")
        assert wrong == []
        assert system.announced() == before

    def test_a_forged_token_is_401(self, system: System) -> None:
        client = system.client()
        forged = bearer("pf_" + "A" * 43)
        wrong = [
            f"{route}: {status}"
            for route in api_writes(system)
            if (
                status := client.open(
                    route.path, method=route.method, json={}, headers=forged
                ).status_code
            )
            != 401
        ]
        assert wrong == []

    def test_a_session_cookie_alone_is_401(self, system: System) -> None:
        client = system.client()
        assert sign_in(client, "sec-admin").status_code == 302
        assert client.get_cookie("partsflow_session") is not None
        wrong = []
        for route in api_writes(system):
            response = client.open(route.path, method=route.method, json={})
            if response.status_code != 401 or response.mimetype != PROBLEM_JSON:
                wrong.append(f"{route}: {response.status_code}")
        wrong += [f"GET {path}" for path in LISTS if client.get(path).status_code != 401]
        assert wrong == []


class TestWritesByRole:
    def test_a_role_without_the_permission_gets_403_and_changes_nothing(
        self, system: System
    ) -> None:
        client = system.client()
        before = system.announced()
        wrong, checked = [], 0
        for route in api_writes(system):
            for role in ROLES:
                if route.permission in PERMISSIONS[role]:
                    continue
                checked += 1
                # Refused for who sent it before anything is said of what was sent.
                for sent in ({"json": {}}, {"data": "garbage", "content_type": "text/plain"}):
                    response = client.open(
                        route.path,
                        method=route.method,
                        headers=bearer(system.tokens[role]),
                        **sent,
                    )
                    body = response.get_json(silent=True) or {}
                    if (
                        response.status_code != 403
                        or response.mimetype != PROBLEM_JSON
                        or body.get("status") != 403
                    ):
                        wrong.append(f"{route} as {role}, {sent}: {response.status_code}")
        assert wrong == []
        assert checked > 20
        assert system.announced() == before

    def test_a_role_with_the_permission_is_let_through_to_validation(self, system: System) -> None:
        """An empty body or an unknown id: refused for what it says (404, 422), never
        for who sent it."""
        client = system.client()
        wrong = []
        for route in api_writes(system):
            for role in ROLES:
                if route.permission not in PERMISSIONS[role]:
                    continue
                response = client.open(
                    route.path, method=route.method, json={}, headers=bearer(system.tokens[role])
                )
                if response.status_code not in (404, 422) or response.mimetype != PROBLEM_JSON:
                    wrong.append(f"{route} as {role}: {response.status_code}")
        assert wrong == []


class TestPageFormsByRole:
    def test_a_signed_in_role_without_the_permission_gets_403(self, system: System) -> None:
        page_writes = [
            r
            for r in system.routes()
            if not is_api(r) and r.method == "POST" and r.permission is not None
        ]
        assert page_writes, "no page forms found in the URL maps"
        before = system.announced()
        wrong = []
        for role in ROLES:
            lacking = [r for r in page_writes if r.permission not in PERMISSIONS[role]]
            if not lacking:
                continue
            client = system.client()
            assert sign_in(client, f"sec-{role}").status_code == 302
            token = csrf_token(client.get("/login").get_data(as_text=True))
            for route in lacking:
                response = client.post(route.path, data={"csrf_token": token})
                if response.status_code != 403:
                    wrong.append(f"{route} as {role}: {response.status_code}")
        assert wrong == []
        assert system.announced() == before
