"""A small reverse proxy for `partsflow stack` on a workstation without nginx.

It routes as the nginx gateway does (deploy/docker/nginx.conf): the first path
segment names the service, paths and query strings pass unchanged, and everything
else goes to the default service. It is for local use only: one thread per
connection, no TLS, no limits beyond those of the apps behind it.

    python -m services.gateway --bind 127.0.0.1:8080 \\
        --upstream inventory=127.0.0.1:8001 --upstream shipments=127.0.0.1:8002 \\
        --upstream tracking=127.0.0.1:8003 --default tracking
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import threading
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Headers that describe one connection, not the message (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 60.0


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host, int(port)


class Gateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, bind: tuple[str, int], upstreams: Mapping[str, tuple[str, int]], default: str
    ) -> None:
        if default not in upstreams:
            raise ValueError(f"the default service {default!r} has no upstream")
        self.upstreams = dict(upstreams)
        self.default = default
        super().__init__(bind, ProxyHandler)

    def upstream_for(self, path: str) -> tuple[str, tuple[str, int]]:
        segment = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        name = segment if segment in self.upstreams else self.default
        return name, self.upstreams[name]


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Gateway

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _forward(self) -> None:
        name, (host, port) = self.server.upstream_for(self.path)
        body = self._request_body()
        headers = self._upstream_headers(body)
        upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        try:
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                status = 504 if isinstance(exc, TimeoutError) else 502
                self._send_problem(status, f"The {name} service did not answer ({exc}).")
                return
            try:
                self._relay(response)
            except (BrokenPipeError, ConnectionResetError):
                # The caller went away before the answer was through.
                self.close_connection = True
        finally:
            upstream.close()

    def _request_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _upstream_headers(self, body: bytes | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                headers[key] = value
        if body is not None:
            headers["Content-Length"] = str(len(body))
        client = self.client_address[0]
        forwarded_for = self.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
        # Behind a TLS proxy, the scheme it was reached by.
        headers["X-Forwarded-Proto"] = self.headers.get("X-Forwarded-Proto") or "http"
        headers["X-Forwarded-Host"] = self.headers.get("Host", "")
        if not self.headers.get("X-Request-ID"):
            headers["X-Request-ID"] = str(uuid.uuid4())
        return headers

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        no_body = self.command == "HEAD" or response.status in (204, 304)
        chunked = length is None and not no_body
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            return
        # read1 hands on what has arrived, so a streamed answer is not held back.
        read = response.read1 if chunked else response.read
        while data := read(CHUNK):
            if chunked:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send_problem(self, status: int, detail: str) -> None:
        title = "Gateway Timeout" if status == 504 else "Bad Gateway"
        problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        body = json.dumps(problem).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Each app logs its own requests; the gateway stays quiet."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bind", required=True, help="host:port to listen on")
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="SERVICE=HOST:PORT",
        help="where a service's web app listens (repeat for each service)",
    )
    parser.add_argument("--default", required=True, help="the service that serves the rest")
    options = parser.parse_args(argv)
    upstreams = {}
    for item in options.upstream:
        name, _, address = item.partition("=")
        upstreams[name] = split_address(address)
    gateway = Gateway(split_address(options.bind), upstreams, options.default)
    # serve_forever() runs here; shutdown() must come from another thread.
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=gateway.shutdown, daemon=True).start()
    )
    try:
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.server_close()


if __name__ == "__main__":
    main()
