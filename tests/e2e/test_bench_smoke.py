"""`make bench` in its smoke mode: every scenario of the benchmark runs for a moment
against real processes, writes its results, and leaves nothing behind. The figures
themselves are not judged here (a benchmark is not a test); what a run must never
show, whatever the machine's speed, is."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import amqp.exceptions
import psycopg
import pytest
from kombu import Connection

from tests.conftest import AMQP_URL, PG_ADMIN_URL, REQUIRE_SERVICES
from tests.processes import ROOT

SCENARIOS = {"http", "bus", "e2e", "hot", "tracking", "scaleout", "embedded"}


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(600)
def test_smoke_run_measures_every_scenario_and_cleans_up(postgres, rabbitmq, tmp_path) -> None:
    if shutil.which("wrk") is None:
        reason = "wrk is not installed (apt-get install -y wrk)"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--results-dir",
            str(tmp_path),
            "--pg-url",
            PG_ADMIN_URL,
            "--amqp-url",
            AMQP_URL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert result.returncode == 0, result.stderr[-5000:]

    [written] = tmp_path.glob("*.json")
    document = json.loads(written.read_text())
    scenarios = document["scenarios"]
    assert set(scenarios) == SCENARIOS
    # Tracking's figures may honestly be "not measured"; nothing may fail.
    assert {s["status"] for s in scenarios.values()} <= {"measured", "not measured"}
    for name in ("http", "bus", "hot", "scaleout", "embedded"):
        assert scenarios[name]["status"] == "measured", (name, scenarios[name]["reason"])

    hot = scenarios["hot"]["figures"]
    assert hot["errors_not_409"] == 0
    assert hot["oversell"] == 0
    assert hot["reserved"] == hot["reservations"] <= hot["on_hand"]
    assert hot["ledger_balanced"]
    assert scenarios["http"]["figures"]["app"]["statuses"].keys() == {"201"}

    latest = (tmp_path / "latest.md").read_text()
    assert "| Figure | Measured | Raw ceiling | Ratio | Target | Result |" in latest
    assert latest in result.stdout
    assert {entry["scenario"] for entry in document["memory"]} >= {"http", "bus", "embedded"}
    assert all(entry["peak_rss_mb"] > 0 for entry in document["memory"])

    run_id = re.search(r"bench: run (\w+):", result.stderr)[1]
    with psycopg.connect(PG_ADMIN_URL) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"pfbench_{run_id}_%",)
        ).fetchall()
    assert left == []
    queue = f"pfbench-{run_id}-bus.inventory.commands"
    with Connection(AMQP_URL) as broker, pytest.raises(amqp.exceptions.NotFound):
        broker.channel().queue_declare(queue, passive=True)
