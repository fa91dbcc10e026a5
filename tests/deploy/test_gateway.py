"""The gateway in front of the three web servers, as `partsflow stack` runs it: the
Python proxy always, nginx with deploy/docker/nginx.conf when nginx is installed.
Behind it stand small servers that answer with what they were sent, so each test
sees exactly which service got a request and in what form."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from services import stack
from tests.processes import Process, free_port, wait_for_http


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.endswith("/streamed"):
            self._streamed()
            return
        if self.path.endswith("/moved"):
            self._answer(302, b"", {"Location": "/login?next=%2Ftracking%2Fjobs%2FJ-1"})
            return
        answer = {
            "service": self.server.service_name,
            "method": self.command,
            "path": self.path,
            "body": body.decode(),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        status = 404 if "missing" in self.path else 200
        self._answer(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _streamed(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(50):
            line = f"line {i}\n".encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, str]]:
    servers = {}
    for name in ("inventory", "shipments", "tracking"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        server.daemon_threads = True
        server.service_name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield {name: f"127.0.0.1:{s.server_address[1]}" for name, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def start_gateway(kind: str, upstreams: dict[str, str], workdir: Path) -> tuple[str, Process]:
    port = free_port()
    command = stack.gateway_command(kind, f"127.0.0.1:{port}", upstreams, workdir)
    process = Process(["/bin/sh", "-c", command], env=None, log=workdir / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/tracking/healthz", process)
    return url, process


@pytest.fixture(scope="module", params=["python", "nginx"])
def gateway(request, upstreams, tmp_path_factory) -> Iterator[str]:
    kind = request.param
    if kind == "nginx" and stack.gateway_kind("auto") != "nginx":
        pytest.skip("nginx is not installed")
    url, process = start_gateway(kind, upstreams, tmp_path_factory.mktemp(f"gateway-{kind}"))
    yield url
    process.stop()


def seen(response: requests.Response) -> dict:
    assert response.status_code in (200, 404), response.text
    return response.json()


class TestRouting:
    @pytest.mark.parametrize(
        ("path", "service"),
        [
            ("/inventory/api/v1/stock?part_number=XRT-2000&page=2", "inventory"),
            ("/inventory", "inventory"),
            ("/shipments/api/v1/shipments/42", "shipments"),
            ("/tracking/jobs/JOB-1042", "tracking"),
            ("/tracking/metrics", "tracking"),
            ("/", "tracking"),
            ("/login?next=/tracking/jobs/J-1", "tracking"),
            ("/logout", "tracking"),
            ("/inventoryx/api", "tracking"),
        ],
    )
    def test_the_first_segment_names_the_service_and_the_path_passes_unchanged(
        self, gateway, path, service
    ) -> None:
        answer = seen(requests.get(gateway + path, timeout=10))
        assert (answer["service"], answer["path"]) == (service, path)

    def test_bodies_methods_and_answers_pass_both_ways(self, gateway) -> None:
        body = json.dumps({"job_id": "JOB-1042", "quantity": 1})
        response = requests.post(
            f"{gateway}/inventory/api/v1/reservations",
            data=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": "k-1"},
            timeout=10,
        )
        answer = seen(response)
        assert (answer["method"], answer["body"]) == ("POST", body)
        assert answer["headers"]["content-type"] == "application/json"
        assert answer["headers"]["idempotency-key"] == "k-1"
        patched = seen(requests.patch(f"{gateway}/inventory/api/v1/warehouses/CDU", timeout=10))
        assert patched["method"] == "PATCH"

    def test_a_body_over_a_mebibyte_reaches_the_app_which_judges_it(self, gateway) -> None:
        body = "x" * (1024 * 1024 + 512 * 1024)
        answer = seen(requests.put(f"{gateway}/shipments/api/v1/big", data=body, timeout=30))
        assert len(answer["body"]) == len(body)

    def test_the_app_sees_the_callers_host_and_address(self, gateway) -> None:
        port = gateway.rsplit(":", 1)[1]
        headers = seen(requests.get(f"{gateway}/tracking/", timeout=10))["headers"]
        assert headers["host"] == f"127.0.0.1:{port}"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"

    def test_the_scheme_a_tls_proxy_in_front_was_reached_by_is_kept(self, gateway) -> None:
        """Links the apps make (a texted job link) must say https behind such a proxy."""
        sent = {"X-Forwarded-Proto": "https"}
        headers = seen(requests.get(f"{gateway}/tracking/", headers=sent, timeout=10))["headers"]
        assert headers["x-forwarded-proto"] == "https"

    def test_a_request_id_is_kept_or_given(self, gateway) -> None:
        given = seen(
            requests.get(f"{gateway}/inventory/x", headers={"X-Request-ID": "req-7"}, timeout=10)
        )
        assert given["headers"]["x-request-id"] == "req-7"
        made = seen(requests.get(f"{gateway}/inventory/x", timeout=10))
        assert len(made["headers"]["x-request-id"]) >= 16

    def test_statuses_redirects_and_streamed_answers_arrive_as_sent(self, gateway) -> None:
        missing = requests.get(f"{gateway}/tracking/missing", timeout=10)
        assert missing.status_code == 404
        assert missing.json()["service"] == "tracking"
        moved = requests.get(f"{gateway}/tracking/moved", allow_redirects=False, timeout=10)
        assert moved.status_code == 302
        assert moved.headers["Location"] == "/login?next=%2Ftracking%2Fjobs%2FJ-1"
        streamed = requests.get(f"{gateway}/tracking/streamed", timeout=10)
        assert streamed.text == "".join(f"line {i}\n" for i in range(50))

    def test_many_requests_share_a_connection(self, gateway) -> None:
        with requests.Session() as session:
            services = [
                seen(session.get(f"{gateway}/{name}/healthz", timeout=10))["service"]
                for name in ("inventory", "shipments", "tracking") * 5
            ]
        assert services == ["inventory", "shipments", "tracking"] * 5


@pytest.mark.parametrize("kind", ["python", "nginx"])
def test_a_service_that_is_down_is_a_bad_gateway(kind, upstreams, tmp_path) -> None:
    if kind == "nginx" and stack.gateway_kind("auto") != "nginx":
        pytest.skip("nginx is not installed")
    down = {**upstreams, "shipments": f"127.0.0.1:{free_port()}"}
    url, process = start_gateway(kind, down, tmp_path)
    try:
        response = requests.get(f"{url}/shipments/api/v1/shipments", timeout=30)
        assert response.status_code == 502
        assert requests.get(f"{url}/inventory/healthz", timeout=10).status_code == 200
    finally:
        process.stop()
