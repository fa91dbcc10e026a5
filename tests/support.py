"""Helpers for driving Partsflow the way its users do: HTTP calls with a token."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.auth import ROLES, UserStore
from shared.config import Settings

REQUIRED_BY = "2026-12-01T08:00:00+00:00"
SITE = {"name": "Ganzi County Hospital", "region": "sichuan"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {json.dumps(self.body, default=str)[:600]})"


class ApiClient:
    """JSON calls through a Flask/werkzeug test client, as one user."""

    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    def get(self, path: str, **params: Any) -> Reply:
        response = self.client.get(path, query_string=params, headers=self._headers(None))
        return _reply(response)

    def wait_for(
        self, path: str, predicate: Any = bool, timeout: float = 10.0, **params: Any
    ) -> Any:
        """GET ``path`` until ``predicate(body)`` holds (the bus is asynchronous)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            reply = self.get(path, **params)
            if reply.status == 200 and predicate(reply.body):
                return reply.body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {path}: last {reply}")
            time.sleep(0.02)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
        content_type: str | None = None,
    ) -> Reply:
        if data is not None:
            response = self.client.post(
                path, data=data, content_type=content_type, headers=self._headers(headers)
            )
        else:
            response = self.client.post(path, json=body, headers=self._headers(headers))
        return _reply(response)

    def patch(self, path: str, body: Any) -> Reply:
        return _reply(self.client.patch(path, json=body, headers=self._headers(None)))

    def as_user(self, token: str | None) -> ApiClient:
        return ApiClient(self.client, token)


def _reply(response: Any) -> Reply:
    text = response.get_data(as_text=True)
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text
    return Reply(response.status_code, body, dict(response.headers))


def make_tokens(settings: Settings) -> dict[str, str]:
    """One user per role; returns role -> token."""
    store = UserStore(settings.users_path)
    return {role: store.add(f"test-{role}", role) for role in ROLES}


def reservation_body(**changes: Any) -> dict[str, Any]:
    body = {
        "job_id": "JOB-1",
        "part_number": "XRT-2000",
        "quantity": 1,
        "required_by": REQUIRED_BY,
        "priority": "machine_down",
        "owner": "li.wei",
        "site": dict(SITE),
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def seed_catalogue(api: ApiClient) -> None:
    """The two warehouses and parts most tests start from."""
    for warehouse in (
        {"code": "SHA", "name": "Shanghai central", "region": "east-china", "kind": "central"},
        {"code": "CDU", "name": "Chengdu depot", "region": "sichuan", "kind": "depot"},
    ):
        assert api.post("/inventory/api/v1/warehouses", warehouse).status == 201
    for part in (
        {
            "part_number": "XRT-2000",
            "description": "X-ray tube",
            "serialized": True,
            "reorder_point": 1,
        },
        {"part_number": "GEL-250", "description": "Gel", "serialized": False, "reorder_point": 5},
    ):
        assert api.post("/inventory/api/v1/parts", part).status == 201
