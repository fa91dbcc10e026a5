"""`partsflow stack` as a developer runs it: it creates the databases it lacks, brings
their schemas up to date, starts every process of the Procfile behind one gateway,
and stops them all on SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys

import psycopg
import pytest
import requests

from services import bootstrap
from shared.config import SERVICES
from tests.conftest import AMQP_URL, PG_ADMIN_URL, make_settings, wait_until
from tests.processes import environment, free_port, partsflow

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def fresh_database_url(postgres, label: str) -> str:
    """A database name of this test run that does not exist yet; the ``postgres``
    fixture drops it at the end like those it creates."""
    name = f"pf_{postgres.run_id}_{label}_{len(postgres.created)}"
    postgres.created.append(name)
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def database_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_partsflow_stack_prepares_the_databases_and_serves_on_one_port(
    postgres, rabbitmq, tmp_path
) -> None:
    urls = {service: fresh_database_url(postgres, f"cmd_{service}") for service in SERVICES}
    settings = make_settings(
        tmp_path,
        broker_url=AMQP_URL,
        bus_prefix=rabbitmq.prefix("cmd"),
        **{f"{service}_db_url": url for service, url in urls.items()},
    )
    rabbitmq.track(bootstrap.bus_topology(settings))
    port = free_port()
    process = partsflow(
        "stack",
        "--port",
        str(port),
        "--web-port",
        "0",
        env=environment(settings),
        log=tmp_path / "stack.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.popen.poll() is None, process.output()[-3000:]
            try:
                return all(
                    requests.get(f"{base}/{service}/readyz", timeout=5).status_code == 200
                    for service in SERVICES
                )
            except requests.RequestException:
                return False

        wait_until(ready, timeout=120, interval=0.25, message="the stack behind its gateway")
        assert requests.get(f"{base}/login", timeout=10).status_code == 200
        for service, url in urls.items():
            assert "alembic_version" in database_tables(url), service
    finally:
        process.stop()
    output = process.output()
    assert "SIGTERM received" in output
    assert process.popen.returncode == 143, output[-3000:]
    created = re.search(r"created the databases (.+)", output)
    assert created is not None, output[-3000:]
    assert set(created[1].split(", ")) == {url.rsplit("/", 1)[1] for url in urls.values()}
    names = {"gateway"} | {f"{s}-{role}" for s in SERVICES for role in ("web", "worker")}
    stopped = set(re.findall(r"\| (\S+) stopped \(rc=", output))
    assert stopped == names
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/tracking/healthz", timeout=5)


def test_db_upgrade_of_a_database_not_created_says_so_in_one_line(postgres, tmp_path) -> None:
    missing = fresh_database_url(postgres, "never_created")
    settings = make_settings(tmp_path, inventory_db_url=missing, broker_url=AMQP_URL)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade", "inventory"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("Error: cannot open the inventory database")
    assert "does not exist" in line
