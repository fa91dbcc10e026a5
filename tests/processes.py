"""Start Partsflow's real processes for end-to-end tests and stop them afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a production process would get for these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTSFLOW_")}
    env.update(
        {
            "PARTSFLOW_DATA_DIR": str(settings.data_dir),
            "PARTSFLOW_BROKER_URL": settings.broker_url,
            "PARTSFLOW_BUS_PREFIX": settings.bus_prefix,
            "PARTSFLOW_SECRET_KEY": settings.secret_key,
            "PARTSFLOW_USERS_FILE": str(settings.users_path),
            "PARTSFLOW_QUEUE_TYPE": settings.queue_type,
            "PARTSFLOW_DELIVERY_LIMIT": str(settings.delivery_limit),
            "PARTSFLOW_RELAY_IDLE_SECONDS": str(settings.relay_idle_seconds),
            "PARTSFLOW_RETRY_BACKOFF_SECONDS": str(settings.retry_backoff_seconds),
            "PARTSFLOW_MAX_RETRY_BACKOFF_SECONDS": str(settings.max_retry_backoff_seconds),
            "PARTSFLOW_TRACKING_SCAN_SECONDS": str(settings.tracking_scan_seconds),
            "PARTSFLOW_LOG_LEVEL": "WARNING",
        }
    )
    for service, url in settings.db_urls.items():
        env[f"PARTSFLOW_{service.upper()}_DB_URL"] = url
    env.update(extra)
    return env


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self.handle = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """A `partsflow` command run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def embedded_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its Partsflow settings, the embedded system's
    data in ``data_dir``, and ``settings`` (names as they are exported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTSFLOW_")}
    env.update({"PARTSFLOW_DATA_DIR": str(data_dir), "PARTSFLOW_LOG_LEVEL": "WARNING"})
    env.update(settings)
    return env


def partsflow(*args: str, env: dict[str, str], log: Path) -> Process:
    return Process([sys.executable, "-m", "services.cli", *args], env, log)


def wait_for_http(url: str, process: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.output()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{process.output()[-3000:]}")


def json_headers(token: str, **extra: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}
