"""A small HTTP client for the calls the harness makes itself (set-up, checks, and the
end-to-end journeys), on the standard library so that it costs little per call."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    def __init__(self, port: int, token: str, timeout: float = 30.0) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        headers = {"Authorization": f"Bearer {self.token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read()
            return Answer(
                response.status,
                json.loads(text) if text else None,
                {k.lower(): v for k, v in response.getheaders()},
            )
        finally:
            connection.close()

    def get(self, path: str) -> Answer:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Answer:
        return self.call("POST", path, body)

    def expect(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        answer = self.call(method, path, body)
        if answer.status != status:
            raise RuntimeError(f"{method} {path} answered {answer.status}: {answer.body}")
        return answer.body
