"""The bus's tables in each service's database, and the write transaction.

``outbox``: events and commands committed with the state change they announce; the
relay publishes them. ``inbox``: ids of consumed messages, recorded in the same
transaction as their effects. ``idempotency_keys``: first answers to POSTs that
carried an ``Idempotency-Key``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.bus.context import current_message
from shared.bus.envelope import encode, make_envelope
from shared.sqltypes import BigId, UTCDateTime

EVENTS = "events"
COMMANDS = "commands"
# An outbox row for its reply_to alone: the answer to a command that changed nothing (a
# repeat), whose event everyone else has had already.
ANSWERS = "answers"

OUTBOX_CHANNEL = "partsflow_outbox"
# The reply_to of a command's answers when the command named no queue: not NULL, so
# the answers are known as answers if the command comes again with a queue.
NO_REPLY_QUEUE = ""
# A statement trigger wakes the relays when outbox rows commit, on PostgreSQL: the
# notification is sent at commit (deduplicated per transaction) without a round trip
# of its own. Each service's migrations install it.
OUTBOX_NOTIFY_TRIGGER = f"""
CREATE OR REPLACE FUNCTION partsflow_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION partsflow_outbox_notify();
"""
DROP_OUTBOX_NOTIFY_TRIGGER = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS partsflow_outbox_notify();
"""


def create_reply_index() -> None:
    """Migrations: the outbox's index of answers to commands (``ix_outbox_replies``)."""
    from alembic import op

    op.create_index(
        "ix_outbox_replies",
        "outbox",
        ["correlation_id"],
        postgresql_where=text("reply_to IS NOT NULL"),
        sqlite_where=text("reply_to IS NOT NULL"),
    )


def drop_reply_index() -> None:
    from alembic import op

    op.drop_index("ix_outbox_replies", table_name="outbox")


def add_idempotency_request_id() -> None:
    """Migrations: the request id of the first answer under an Idempotency-Key, which
    its replays answer with too (null for keys recorded before)."""
    import sqlalchemy as sa
    from alembic import op

    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))


def drop_idempotency_request_id() -> None:
    from alembic import op

    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("request_id")


class DuplicateDelivery(Exception):
    """The message was applied before (its id is in the inbox)."""


@dataclass(frozen=True)
class BusTables:
    outbox: Table
    inbox: Table
    idempotency_keys: Table


def define_bus_tables(metadata: MetaData) -> BusTables:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("exchange", String(16), nullable=False),
        Column("routing_key", String(200), nullable=False),
        Column("body", Text, nullable=False),
        Column("correlation_id", String(64), nullable=False),
        # Where a command's answer also goes; NO_REPLY_QUEUE for an answer to a command
        # that named none, so that its repeat naming one finds it.
        Column("reply_to", String(255)),
        Column("created_at", UTCDateTime, nullable=False),
        # Not before: set when a publish failed (an unroutable command), for a later retry.
        Column("available_at", UTCDateTime),
        Column("sent_at", UTCDateTime),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text),
    )
    Index(
        "ix_outbox_unsent",
        outbox.c.id,
        postgresql_where=outbox.c.sent_at.is_(None),
        sqlite_where=outbox.c.sent_at.is_(None),
    )
    Index("ix_outbox_sent_at", outbox.c.sent_at)
    # The answers to a command, found again when the command comes again.
    Index(
        "ix_outbox_replies",
        outbox.c.correlation_id,
        postgresql_where=outbox.c.reply_to.is_not(None),
        sqlite_where=outbox.c.reply_to.is_not(None),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("message_id", String(64), primary_key=True),
        Column("message_type", String(200), nullable=False),
        Column("received_at", UTCDateTime, nullable=False, index=True),
    )
    idempotency_keys = Table(
        "idempotency_keys",
        metadata,
        Column("principal", String(100), primary_key=True),
        Column("key", String(255), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("status_code", Integer),
        Column("response_body", Text),
        # The first request's id: a replay answers with it, so the events it caused
        # (correlated to it) are found from the replay's answer too.
        Column("request_id", String(64)),
        Column("created_at", UTCDateTime, nullable=False),
    )
    return BusTables(outbox=outbox, inbox=inbox, idempotency_keys=idempotency_keys)


def _is_inbox_conflict(exc: IntegrityError) -> bool:
    """The inbox's key refused a message id: it was applied before."""
    diagnostics = getattr(exc.orig, "diag", None)
    if diagnostics is not None:  # PostgreSQL names the constraint
        return diagnostics.constraint_name == "pk_inbox"
    return "inbox.message_id" in str(exc.orig)


# The shape of rows written together at commit: each table and its columns.
BatchShape = tuple[tuple[Table, tuple[str, ...]], ...]


@functools.lru_cache(maxsize=256)
def _batch_insert(shape: BatchShape) -> Any:
    """One single-row INSERT per table (multi-row VALUES are not cached compiled), all
    but the last as data-modifying CTEs of the last: a single PostgreSQL statement.
    Constraints are checked at its end, so the order of the tables does not matter."""
    statements = [
        insert(table).values(
            {column: bindparam(f"b{t}_{column}", type_=table.c[column].type) for column in columns}
        )
        for t, (table, columns) in enumerate(shape)
    ]
    *ctes, last = statements
    return last.add_cte(*(cte.cte(f"write_{t}") for t, cte in enumerate(ctes)))


class Transaction:
    """A unit of work: a session plus the outbox of the service that owns it."""

    def __init__(self, session: Session, bus: BusTables, *, source: str) -> None:
        self.session = session
        self.bus = bus
        self.source = source
        self.outbox_rows = 0
        self._at_commit: list[tuple[Table, list[Mapping[str, Any]]]] = []
        self._inbox_row: dict[str, Any] | None = None

    def insert_at_commit(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows nothing in this transaction reads back (outbox rows, history, ledger
        lines): written together just before the commit, on PostgreSQL in a single
        statement, the hot paths' saving of a round trip per table. They go after the
        session's own pending objects, which therefore must not refer to them; among
        themselves, parents before children, in the order given. Every row of one
        table has the same columns. Not inside a savepoint: its rollback would not take
        them back."""
        if not rows:
            return
        if self.session.in_nested_transaction():
            # A savepoint's rollback would not take these rows back with it.
            raise RuntimeError("rows to write at commit are not taken inside a savepoint")
        last = self._at_commit[-1] if self._at_commit else None
        if last is not None and last[0] is table and last[1][0].keys() == rows[0].keys():
            last[1].extend(rows)
        else:
            self._at_commit.append((table, list(rows)))

    @property
    def inbox_message_id(self) -> str | None:
        """The consumed message this transaction records as applied, if any."""
        return self._inbox_row["message_id"] if self._inbox_row is not None else None

    def write_pending(self) -> None:
        """Write what :meth:`insert_at_commit` held, after the session's own pending
        objects (rows held here may refer to them); the commit calls it."""
        pending, self._at_commit = self._at_commit, []
        if not pending:
            return
        self.session.flush()
        try:
            self._write(pending)
        except IntegrityError as exc:
            if self._inbox_row is not None and _is_inbox_conflict(exc):
                raise DuplicateDelivery(self._inbox_row["message_id"]) from None
            raise

    def _write(self, pending: list[tuple[Table, list[Mapping[str, Any]]]]) -> None:
        tables = {table for table, _rows in pending}
        if (
            len(pending) == 1
            or len(tables) < len(pending)  # CTEs run in no set order: keep the given one
            or any(len(rows) > 1 for _table, rows in pending)
            or self.session.get_bind().dialect.name != "postgresql"
        ):
            for table, rows in pending:
                self.session.execute(insert(table), rows)
            return
        shape = tuple((table, tuple(rows[0])) for table, rows in pending)
        params = {
            f"b{t}_{column}": value
            for t, (_table, rows) in enumerate(pending)
            for column, value in rows[0].items()
        }
        self.session.execute(_batch_insert(shape), params)

    def begin(self) -> None:
        """Note the message being handled (if any) for the inbox. Its row goes first
        among the rows written at commit; a message applied before fails there, on the
        inbox's key, and the whole transaction is undone (:class:`DuplicateDelivery`)."""
        context = current_message.get()
        if context is None or context.inbox_message_id is None or context.inbox_recorded:
            return
        self._inbox_row = {
            "message_id": context.inbox_message_id,
            "message_type": context.inbox_message_type or "",
            "received_at": datetime.now(UTC),
        }
        self._at_commit.append((self.bus.inbox, [self._inbox_row]))

    def committed(self) -> None:
        context = current_message.get()
        if context is not None and context.inbox_message_id is not None:
            context.inbox_recorded = True

    def publish(
        self,
        type: str,
        *,
        data: Mapping[str, Any],
        subject: str | None = None,
        correlation_id: str | None = None,
        reply: bool = True,
    ) -> str:
        """Add an event to the outbox; it goes out after this transaction commits.

        ``reply``: when the message being handled asked for an answer (``reply_to``),
        this event is also sent there.
        """
        return self._add(EVENTS, type, data, subject, correlation_id, reply)

    def answer_repeat(
        self, type: str, *, data: Mapping[str, Any], subject: str | None = None
    ) -> str:
        """Answer a command that came again and changed nothing, with the event it
        caused the first time: to the queue it names, the one its sender waits on;
        without one, on the events exchange, the only place that sender can hear it."""
        context = current_message.get()
        kind = ANSWERS if context is not None and context.reply_to else EVENTS
        return self._add(kind, type, data, subject, None, reply=True)

    def send_command(
        self,
        type: str,
        *,
        data: Mapping[str, Any],
        subject: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        return self._add(COMMANDS, type, data, subject, correlation_id, reply=False)

    def _add(
        self,
        exchange: str,
        type: str,
        data: Mapping[str, Any],
        subject: str | None,
        correlation_id: str | None,
        reply: bool,
    ) -> str:
        context = current_message.get()
        envelope = make_envelope(
            type,
            source=self.source,
            data=data,
            subject=subject,
            correlationid=correlation_id or (context.correlation_id if context else None),
        )
        self.insert_at_commit(
            self.bus.outbox,
            [
                {
                    "message_id": envelope["id"],
                    "exchange": exchange,
                    "routing_key": type,
                    "body": encode(envelope),
                    "correlation_id": envelope["correlationid"],
                    "reply_to": context.reply_to if (reply and context) else None,
                    "created_at": datetime.now(UTC),
                    "available_at": None,
                    "sent_at": None,
                    "attempts": 0,
                    "last_error": None,
                }
            ],
        )
        self.outbox_rows += 1
        return envelope["id"]
