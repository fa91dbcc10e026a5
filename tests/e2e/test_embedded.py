"""`partsflow` as a new user runs it: the embedded system in its own process, users
on the command line, and a kill -9 that loses nothing."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import requests

from shared.auth import UserStore
from tests import processes
from tests.conftest import wait_until
from tests.processes import cli, free_port, json_headers, partsflow, wait_for_http
from tests.support import reservation_body

INV = "/inventory/api/v1"
SHP = "/shipments/api/v1/shipments"


def embedded_env(data_dir: Path) -> dict[str, str]:
    return processes.embedded_env(data_dir, PARTSFLOW_RELAY_IDLE_SECONDS="0.05")


class TestCommandLine:
    def test_users_add_prints_the_token_last_and_takes_a_password(self, tmp_path) -> None:
        env = embedded_env(tmp_path)
        result = cli(
            "users",
            "add",
            "ana",
            "--role",
            "logistics",
            "--password",
            env=env,
            stdin="s3cret-pass\ns3cret-pass\n",
        )
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip().splitlines()[-1]
        assert token.startswith("pf_")
        users = json.loads((tmp_path / "users.json").read_text())["users"]
        assert users["ana"]["role"] == "logistics"
        assert token not in (tmp_path / "users.json").read_text()

    def test_a_password_from_a_windows_file_has_no_line_ending(self, tmp_path) -> None:
        env = embedded_env(tmp_path)
        stdin = "s3cret-pass\r\ns3cret-pass\r\n"
        result = cli("users", "add", "ana", "--role", "viewer", "--password", env=env, stdin=stdin)
        assert result.returncode == 0, result.stderr
        users = UserStore(tmp_path / "users.json")
        assert users.by_password("ana", "s3cret-pass") is not None

    def test_mismatched_passwords_are_refused(self, tmp_path) -> None:
        result = cli(
            "users",
            "add",
            "ana",
            "--role",
            "viewer",
            "--password",
            env=embedded_env(tmp_path),
            stdin="one-password\nanother-one\n",
        )
        assert result.returncode != 0
        assert "differ" in result.stderr

    def test_bad_setting_stops_with_one_line(self, tmp_path) -> None:
        env = embedded_env(tmp_path) | {
            "PARTSFLOW_SECRET_KEY": "k" * 40,
            "PARTSFLOW_BROKER_URL": "http://nope",
        }
        result = cli("worker", "inventory", env=env)
        assert result.returncode != 0
        [line] = [x for x in result.stderr.splitlines() if x.strip()]
        assert "PARTSFLOW_BROKER_URL" in line

    def test_production_processes_need_a_secret(self, tmp_path) -> None:
        result = cli("web", "inventory", env=embedded_env(tmp_path))
        assert result.returncode != 0
        assert "PARTSFLOW_SECRET_KEY" in result.stderr

    def test_db_upgrade_creates_every_schema(self, tmp_path) -> None:
        result = cli("db", "upgrade", env=embedded_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert {p.name for p in tmp_path.glob("*.db")} == {
            "inventory.db",
            "shipments.db",
            "tracking.db",
        }


class TestEmbeddedRun:
    def test_demo_serves_all_three_services(self, tmp_path) -> None:
        port = free_port()
        process = partsflow(
            "run",
            "--demo",
            "--port",
            str(port),
            env=embedded_env(tmp_path),
            log=tmp_path / "run.log",
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for service in ("inventory", "shipments", "tracking"):
                wait_for_http(f"{base}/{service}/healthz", process)
            output = process.output()
            token = next(
                line.split()[2] for line in output.splitlines() if line.strip().startswith("admin")
            )
            stock = requests.get(
                f"{base}{INV}/stock",
                params={"part_number": "XRT-2000"},
                headers=json_headers(token),
                timeout=5,
            ).json()
            assert {row["warehouse"] for row in stock} >= {"SHA", "CDU"}
        finally:
            process.stop()

    def test_kill_9_and_restart_loses_nothing(self, tmp_path) -> None:
        env = embedded_env(tmp_path)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "run.log"
        process = partsflow("run", "--demo", "--port", str(port), env=env, log=log)
        try:
            wait_for_http(f"{base}/inventory/healthz", process)
            token = next(
                line.split()[2]
                for line in process.output().splitlines()
                if line.strip().startswith("admin")
            )
            headers = json_headers(token)
            reserved = []
            for i in range(20):
                body = reservation_body(job_id=f"K9-{i}", part_number="GEL-250", warehouse="SHA")
                reply = requests.post(
                    f"{base}{INV}/reservations", data=json.dumps(body), headers=headers, timeout=5
                )
                assert reply.status_code == 201, reply.text
                reserved.append(reply.json()["id"])
            process.kill(signal.SIGKILL)
        finally:
            process.stop()

        process = partsflow("run", "--port", str(port), env=env, log=log)
        try:
            wait_for_http(f"{base}/inventory/healthz", process)
            listed = requests.get(
                f"{base}{INV}/reservations",
                params={"status": "confirmed"},
                headers=headers,
                timeout=5,
            ).json()
            assert {r["id"] for r in listed} >= set(reserved), (len(listed), listed[:1])

            def every_reservation_planned() -> bool:
                shipments = requests.get(f"{base}{SHP}", headers=headers, timeout=5).json()
                planned = {line["reservation_id"] for s in shipments for line in s["lines"]}
                return set(reserved) <= planned

            wait_until(
                every_reservation_planned,
                timeout=30,
                message="a planned shipment for every reservation made before the kill",
            )
        finally:
            process.stop()
