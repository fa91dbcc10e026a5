"""The write transaction on both databases: rows held for the commit keep their order,
a message applied twice changes nothing the second time, however it trips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import services.inventory as inventory_pkg
from services.inventory.models import BUS, Warehouse
from shared.bus.context import MessageContext, message_context
from shared.bus.store import DuplicateDelivery
from shared.db import Database
from tests.conftest import make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    overrides = {}
    if request.param == "postgresql":
        overrides["inventory_db_url"] = request.getfixturevalue("postgres").create("writes")
    settings = make_settings(tmp_path, **overrides)
    inventory_pkg.upgrade_database(settings)
    database = inventory_pkg.open_service(settings).db
    yield database
    database.dispose()


def warehouse(code: str) -> Warehouse:
    now = datetime.now(UTC)
    return Warehouse(
        code=code, name=code, region="sichuan", kind="depot", created_at=now, updated_at=now
    )


def outbox_types(db: Database) -> list[str]:
    outbox = BUS.outbox
    with db.reading() as s:
        return list(s.scalars(select(outbox.c.routing_key).order_by(outbox.c.id)))


def count(db: Database, model: type) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_events_of_one_transaction_go_out_in_the_order_published(db: Database) -> None:
    with db.transaction() as tx:
        tx.session.add(warehouse("CDU"))
        for n in (1, 2, 3):
            tx.publish(f"test.step.{n}", data={"n": n})
    with db.transaction() as tx:
        tx.publish("test.step.4", data={"n": 4})
    assert outbox_types(db) == [f"test.step.{n}" for n in (1, 2, 3, 4)]
    assert count(db, Warehouse) == 1


def test_a_message_applied_twice_changes_nothing_the_second_time(db: Database) -> None:
    context = MessageContext(correlation_id="m-1", inbox_message_id="m-1", inbox_message_type="t")

    def apply() -> None:
        with message_context(context), db.transaction() as tx:
            tx.session.add(warehouse("SHA"))  # trips over its own unique code on a repeat
            tx.publish("test.applied", data={"message": "m-1"})

    apply()
    context.inbox_recorded = False  # a redelivery: a new attempt at the same message
    with pytest.raises(DuplicateDelivery):
        apply()
    assert count(db, Warehouse) == 1
    assert outbox_types(db) == ["test.applied"]


def test_a_repeat_whose_own_work_goes_through_is_still_refused(db: Database) -> None:
    context = MessageContext(correlation_id="m-2", inbox_message_id="m-2", inbox_message_type="t")

    def apply(code: str) -> None:
        with message_context(context), db.transaction() as tx:
            tx.session.add(warehouse(code))
            tx.publish("test.applied", data={"code": code})

    apply("W1")
    context.inbox_recorded = False
    with pytest.raises(DuplicateDelivery):
        apply("W2")
    assert count(db, Warehouse) == 1
    assert [json.loads(b)["data"] for b in _bodies(db)] == [{"code": "W1"}]


def test_rows_for_the_commit_are_refused_inside_a_savepoint(db: Database) -> None:
    with (
        pytest.raises(RuntimeError, match="savepoint"),
        db.transaction() as tx,
        tx.session.begin_nested(),
    ):
        tx.publish("test.nested", data={})
    assert outbox_types(db) == []


def _bodies(db: Database) -> list[str]:
    outbox = BUS.outbox
    with db.reading() as s:
        return list(s.scalars(select(outbox.c.body).order_by(outbox.c.id)))


@pytest.fixture
def answered(tmp_path: Path) -> Iterator[tuple[Database, Any]]:
    """Inventory's database holding the answer to command cmd-1 (a confirmed
    reservation, for the queue replies-old), and a relay to send it."""
    from services import bootstrap
    from shared.bus.relay import OutboxRelay

    settings = make_settings(tmp_path)
    inventory_pkg.upgrade_database(settings)
    db = inventory_pkg.open_service(settings).db
    try:
        command = MessageContext(
            correlation_id="cmd-1",
            inbox_message_id="cmd-1",
            inbox_message_type="inventory.reserve",
            reply_to="replies-old",
        )
        with message_context(command), db.transaction() as tx:
            tx.publish("inventory.reservation.confirmed", subject="r-1", data={"id": "r-1"})
        yield db, OutboxRelay(db, settings, bootstrap.bus_topology(settings))
    finally:
        db.dispose()


def test_an_answer_moved_to_another_reply_queue_while_it_was_published_goes_there_too(
    answered: tuple[Database, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite: the relay reads, publishes, then marks (PostgreSQL holds the rows locked
    # from the claim to the commit, and the repeat's update then finds them sent).
    db, relay = answered
    published: list[str | None] = []
    real_publish = relay.publish

    def publish_while_the_command_comes_again(rows):
        published.extend(row.reply_to for row in rows)
        if len(published) == 1:
            db.send_answers_again("cmd-1", "replies-new")
        return real_publish(rows)

    monkeypatch.setattr(relay, "publish", publish_while_the_command_comes_again)
    relay.relay_once()
    relay.relay_once()
    assert published == ["replies-old", "replies-new"]
    outbox = db.bus.outbox
    with db.reading() as session:
        (row,) = session.execute(select(outbox.c.reply_to, outbox.c.sent_at)).all()
    assert row.reply_to == "replies-new" and row.sent_at is not None


def test_an_answer_sent_already_goes_again_to_the_new_queue_alone(
    answered: tuple[Database, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events exchange had it; the sender that lost it gets it on its new queue."""
    from shared.bus.store import ANSWERS

    db, relay = answered
    assert relay.relay_once() == 1
    assert db.send_answers_again("cmd-1", "replies-new") == 1
    published = []
    real_publish = relay.publish

    def publish(rows):
        published.extend((row.exchange, row.reply_to) for row in rows)
        return real_publish(rows)

    monkeypatch.setattr(relay, "publish", publish)
    assert relay.relay_once() == 1
    assert published == [(ANSWERS, "replies-new")]
