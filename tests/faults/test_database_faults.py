"""The database misbehaves: PostgreSQL stopped while messages arrive, a transaction
that fails before its commit, a relay killed between commit and publish, and
transactions that commit out of id order."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from services.inventory.models import Stock
from tests.faults.checker import History, assert_exactly_once
from tests.faults.conftest import (
    CONFIRMED,
    CommandPublisher,
    Lab,
    reserve_command,
    reserve_over_http,
)
from tests.support import REQUIRED_BY, SITE, reservation_body

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults")]


def reservation_event(job_id: str) -> dict[str, Any]:
    """An ``inventory.reservation.confirmed`` payload, as the watcher reads it."""
    return {
        "id": str(uuid.uuid4()),
        "job_id": job_id,
        "part_number": "GEL-250",
        "quantity": 1,
        "warehouse": "CDU",
        "status": "confirmed",
        "priority": "routine",
        "required_by": REQUIRED_BY,
        "owner": "li.wei",
        "site": dict(SITE),
        "version": 1,
    }


@pytest.mark.timeout(150)
class TestDatabaseOutage:
    def test_messages_wait_out_a_postgres_outage_and_are_applied_after_it(self, lab: Lab) -> None:
        lab.receive("GEL-250", "CDU", 500)
        history = History()
        # Events for the watcher queue up before the outage...
        reserve_over_http(lab, [reserve_command(f"D-http-{i}") for i in range(60)], history)
        lab.inventory_worker()
        lab.wait_outbox_drained()
        client = lab.bus_client()
        lab.postgres.stop()
        try:
            # ...and reach it, with commands for inventory, while PostgreSQL is down.
            lab.watcher_worker()
            invalid = [
                client.command("inventory.reserve", reservation_body(job_id="D-bad", quantity=-1))
                for _ in range(2)
            ]
            time.sleep(3)
            publisher = CommandPublisher(lab.settings.broker_url, lab.prefix, history)
            for i in range(60):
                publisher.send("inventory.reserve", reserve_command(f"D-bus-{i}"), f"D-bus-{i}")
            publisher.close()
            time.sleep(5)  # an outage well past the delivery limit's worth of retries
            queues = lab.rabbit.queues()
            held = queues[lab.queue("inventory.commands")]
            assert held["ready"] + held["unacked"] == 62, queues
            assert queues[lab.queue("watcher.events")]["unacked"] > 0, queues
            lab.assert_nothing_dead()
        finally:
            lab.postgres.start()

        lab.assert_every_job_once(history, "D-")
        answers = client.collect_replies(lambda r: len(r) >= 2, timeout=60)
        client.close()
        assert sorted((r["type"], r["correlationid"]) for r in answers) == sorted(
            ("inventory.reservation.rejected", command_id) for command_id in invalid
        )
        lab.assert_nothing_dead()


@pytest.mark.timeout(150)
class TestOutboxAtomicity:
    def test_a_failure_before_commit_leaves_neither_state_nor_event(self, lab: Lab) -> None:
        lab.receive("GEL-250", "CDU", 10)
        lab.inventory_worker()
        lab.watcher_worker()
        db = lab.inventory.db
        history = History()

        def stock_on_hand() -> int:
            with db.reading() as session:
                return sum(session.scalars(select(Stock.on_hand)).all())

        before = stock_on_hand()
        # The code fails after writing state and event.
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.session.execute(Stock.__table__.update().values(on_hand=Stock.on_hand + 5))
            tx.publish(CONFIRMED, data=reservation_event("A-ghost-1"))
            raise RuntimeError("a bug after the writes")
        # The database drops the connection just before the commit.
        with pytest.raises(OperationalError), db.transaction() as tx:
            tx.session.execute(Stock.__table__.update().values(on_hand=Stock.on_hand + 5))
            tx.publish(CONFIRMED, data=reservation_event("A-ghost-2"))
            pid = tx.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(lab.postgres.admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        # Later work goes through; the two failed transactions left nothing behind.
        reserve_over_http(lab, [reserve_command("A-after")], history)
        lab.settle_downstream(history)
        lab.wait_outbox_drained()
        assert stock_on_hand() == before
        applied = lab.watcher.effects_per_job(CONFIRMED)
        assert_exactly_once(history, applied, "confirmed events applied downstream")

    def test_rows_committed_before_a_relay_is_killed_go_out_after_restart(self, lab: Lab) -> None:
        lab.receive("GEL-250", "CDU", 100)
        lab.watcher_worker()
        proxy = lab.proxy()
        dark = proxy.url(lab.settings.broker_url)
        first = lab.spawn_inventory_worker("worker-1", broker_url=dark)
        lab.wait_for_consumers("inventory.commands", 1)
        history = History()
        # The relay is connected (it published this one) when the link goes dead.
        reserve_over_http(lab, [reserve_command("K-before")], history)
        lab.settle_downstream(history)
        proxy.blackhole()
        reserve_over_http(lab, [reserve_command(f"K-{i}") for i in range(30)], history)
        # The relay claims the rows and publishes into the dead link; none is confirmed.
        time.sleep(lab.settings.confirm_timeout + 1)
        assert lab.unsent() == 30
        first.kill()
        proxy.cut()
        proxy.heal()
        lab.spawn_inventory_worker("worker-2")
        lab.assert_every_job_once(history, "K-")

    def test_a_transaction_that_commits_out_of_id_order_is_still_published(self, lab: Lab) -> None:
        lab.inventory_worker()
        lab.watcher_worker()
        db = lab.inventory.db
        history = History()
        written, go = threading.Event(), threading.Event()

        def slow_transaction() -> None:
            with db.transaction() as tx:
                ids.append(tx.publish(CONFIRMED, data=reservation_event("O-early-id")))
                tx.write_pending()  # the row and its id now, the commit much later
                written.set()
                go.wait(30)
            history.acknowledged("O-early-id")

        ids: list[str] = []
        slow = threading.Thread(target=slow_transaction)
        slow.start()
        assert written.wait(10)
        with db.transaction() as tx:
            ids.append(tx.publish(CONFIRMED, data=reservation_event("O-late-id")))
        history.acknowledged("O-late-id")
        # The later id is committed and published while the earlier one is still open...
        lab.settle(
            lambda: {"O-late-id"} - set(lab.watcher.effects_per_job(CONFIRMED)),
            "applied downstream",
        )
        go.set()
        slow.join(timeout=30)
        # ...and the earlier one still goes out once it commits.
        lab.settle_downstream(history)
        assert_exactly_once(history, lab.watcher.effects_per_job(CONFIRMED), "events applied")
        outbox = db.bus.outbox
        with db.reading() as session:
            row_ids = dict(session.execute(select(outbox.c.message_id, outbox.c.id)).all())
        assert row_ids[ids[0]] < row_ids[ids[1]]
        assert lab.unsent() == 0
