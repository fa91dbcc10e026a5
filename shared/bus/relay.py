"""The outbox relay: publishes committed outbox rows and marks them sent only once
the broker has confirmed them.

On RabbitMQ a batch is published on a confirm-mode channel, commands with
``mandatory`` set, and the relay then waits once for all the confirms (waiting per
message costs an order of magnitude). A row is marked sent only if every publish of
it was acked and a command was not returned as unroutable. Rows are claimed with
``FOR UPDATE SKIP LOCKED``, so several relays of one service can run at once.
Rows are picked by ``sent_at IS NULL``, never by a high-water mark, so a transaction
that commits out of id order is still published.

The in-process transport keeps nothing across a restart, so there the relay
publishes again, at start, what it sent recently; consumers' inboxes absorb the
repeats.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp
from sqlalchemy import Table, bindparam, case, or_, select, update
from sqlalchemy.engine import Connection as SQLConnection

from shared.bus.connection import CONNECTION_ERRORS, connect, connection_errors
from shared.bus.envelope import CONTENT_TYPE
from shared.bus.store import ANSWERS, COMMANDS, EVENTS, OUTBOX_CHANNEL
from shared.bus.topology import Topology
from shared.config import Settings
from shared.db import Database, is_transient_db_error

log = logging.getLogger("partsflow.bus.relay")

VOLATILE_REPLAY_WINDOW = timedelta(hours=24)
RETENTION = timedelta(days=7)
UNROUTABLE_RETRY = timedelta(seconds=30)


class ConfirmTimeout(RuntimeError):
    """The broker did not confirm a batch in time; the connection is presumed dead."""


@dataclass
class OutboxRow:
    id: int
    message_id: str
    exchange: str
    routing_key: str
    body: str
    correlation_id: str
    reply_to: str | None
    attempts: int


@dataclass
class PublishResult:
    sent: list[int]
    failed: dict[int, str]


@dataclass(frozen=True)
class _Statements:
    unsent: Any
    claim: Any
    mark_sent: Any
    mark_failed: Any


@functools.cache
def _statements(outbox: Table) -> _Statements:
    """Built once per outbox: only their parameters change from batch to batch."""
    unsent = (
        select(outbox)
        .where(
            outbox.c.sent_at.is_(None),
            or_(outbox.c.available_at.is_(None), outbox.c.available_at <= bindparam("now")),
        )
        .order_by(outbox.c.id)
        .limit(bindparam("batch"))
    )
    # Materialized, so the locking LIMIT query runs once whatever the plan.
    claimed = (
        unsent.with_only_columns(outbox.c.id)
        .with_for_update(skip_locked=True)
        .cte("claimed")
        .prefix_with("MATERIALIZED")
    )
    return _Statements(
        unsent=unsent,
        claim=update(outbox)
        .where(outbox.c.id == claimed.c.id)
        .values(sent_at=bindparam("now"))
        .returning(*outbox.c),
        # Unless a repeated command moved the row to another reply queue meanwhile:
        # then it stays unsent, and goes out again to where it is asked for now.
        mark_sent=update(outbox)
        .where(
            outbox.c.id == bindparam("row_id"),
            outbox.c.reply_to.is_not_distinct_from(bindparam("published_reply_to")),
        )
        .values(sent_at=bindparam("now")),
        mark_failed=update(outbox)
        .where(outbox.c.id == bindparam("row_id"))
        .values(
            sent_at=None,
            attempts=outbox.c.attempts + 1,
            last_error=bindparam("error"),
            available_at=bindparam("retry_at"),
        ),
    )


class OutboxRelay:
    def __init__(self, db: Database, settings: Settings, topology: Topology) -> None:
        self.db = db
        self.settings = settings
        self.topology = topology
        self.name = f"{db.service}-relay"
        self.published_total = 0
        # Connections opened to the broker: all but the first are reconnects.
        self.connections_opened = 0
        self._connection: Any = None
        self._channel: Any = None
        self._next_tag = 1
        self._listener: threading.Thread | None = None

    # -- the loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting to the broker and the database."""
        if self.db.is_postgres:
            self._listener = threading.Thread(
                target=self._listen_for_commits,
                args=(stop,),
                name=f"{self.name}-listen",
                daemon=True,
            )
            self._listener.start()
        if self.settings.is_memory_bus:
            self._replay_recent()
        backoff = self.settings.retry_backoff_seconds
        last_housekeeping = 0.0
        while not stop.is_set():
            try:
                self.db.outbox_written.clear()
                sent = self.relay_once()
                backoff = self.settings.retry_backoff_seconds
                if time.monotonic() - last_housekeeping > 3600:
                    self.delete_old_rows()
                    last_housekeeping = time.monotonic()
                if sent < self.settings.relay_batch_size:
                    self._idle(stop)
            except Exception as exc:
                if not (is_transient_db_error(exc) or self._is_connection_error(exc)):
                    log.exception("outbox relay failed", extra={"service": self.db.service})
                else:
                    log.warning("outbox relay waiting: %s", exc, extra={"service": self.db.service})
                self._drop_connection()
                stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.max_retry_backoff_seconds)
        self._disconnect()

    def _idle(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.settings.relay_idle_seconds
        while not stop.is_set() and time.monotonic() < deadline:
            if self.db.outbox_written.wait(min(0.5, self.settings.relay_idle_seconds)):
                return
            if self._connection is not None and not self.settings.is_memory_bus:
                # Read what the broker sent meanwhile (its heartbeats among it): unread,
                # they look missed and an idle connection is dropped as dead.
                with contextlib.suppress(TimeoutError):
                    self._connection.drain_events(timeout=0.01)
                self._connection.heartbeat_check()

    def _is_connection_error(self, exc: BaseException) -> bool:
        if isinstance(exc, ConfirmTimeout):
            return True
        # A failed publish has already dropped its connection: judge by the usual kinds.
        errors = connection_errors(self._connection) if self._connection else CONNECTION_ERRORS
        return isinstance(exc, errors)

    # -- one batch -----------------------------------------------------------------------
    def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were confirmed."""
        now = datetime.now(UTC)
        statements = _statements(self.db.bus.outbox)
        params = {"now": now, "batch": self.settings.relay_batch_size}
        if self.db.is_postgres:
            # Claimed and marked sent in one statement, in a transaction held for the
            # publish: a second relay skips these rows, and if the publish fails the
            # rollback leaves them unsent.
            with self.db.engine.begin() as conn:
                rows = self._rows(conn.execute(statements.claim, params))
                if not rows:
                    return 0
                rows.sort(key=lambda row: row.id)
                result = self.publish(rows)
                self._record_failures(conn, result, now)
        else:
            with self.db.engine.connect() as conn:
                rows = self._rows(conn.execute(statements.unsent, params))
                conn.rollback()
            if not rows:
                return 0
            result = self.publish(rows)
            with self.db.engine.begin() as conn:
                sent = set(result.sent)
                marks = [
                    {"row_id": row.id, "published_reply_to": row.reply_to, "now": now}
                    for row in rows
                    if row.id in sent
                ]
                if marks:
                    conn.execute(statements.mark_sent, marks)
                self._record_failures(conn, result, now)
        self.published_total += len(result.sent)
        return len(result.sent)

    @staticmethod
    def _rows(result: Any) -> list[OutboxRow]:
        return [
            OutboxRow(
                id=row.id,
                message_id=row.message_id,
                exchange=row.exchange,
                routing_key=row.routing_key,
                body=row.body,
                correlation_id=row.correlation_id,
                reply_to=row.reply_to,
                attempts=row.attempts,
            )
            for row in result
        ]

    def _record_failures(self, conn: SQLConnection, result: PublishResult, now: datetime) -> None:
        statements = _statements(self.db.bus.outbox)
        for row_id, error in result.failed.items():
            # An unroutable command is retried later, not in a hot loop.
            conn.execute(
                statements.mark_failed,
                {"row_id": row_id, "error": error[:2000], "retry_at": now + UNROUTABLE_RETRY},
            )
            log.error(
                "outbox message not routable; kept unsent",
                extra={"service": self.db.service, "outbox_id": row_id, "error": error},
            )

    # -- publishing ----------------------------------------------------------------------
    def publish(self, rows: Sequence[OutboxRow]) -> PublishResult:
        self._ensure_connected()
        try:
            if self.settings.is_memory_bus:
                return self._publish_in_process(rows)
            return self._publish_confirmed(rows)
        except BaseException:
            self._drop_connection()
            raise

    def _ensure_connected(self) -> None:
        if self._connection is not None:
            return
        connection = connect(self.settings, name=self.name)
        connection.ensure_connection(max_retries=1)
        try:
            self.topology.declare(connection)
            channel = connection.channel()
            if not self.settings.is_memory_bus:
                channel.confirm_select()
        except BaseException:
            connection.release()
            raise
        self._connection = connection
        self._channel = channel
        self._next_tag = 1  # a confirm-mode channel numbers its publishes from 1
        self.connections_opened += 1

    @property
    def reconnects(self) -> int:
        return max(self.connections_opened - 1, 0)

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    def _drop_connection(self) -> None:
        """Forget a connection in doubt (a publish or heartbeat failed) without the
        closing handshake: on a dead link the broker's answer never comes, and
        release() would wait for it forever."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()

    def _properties(self, row: OutboxRow) -> dict[str, Any]:
        return {
            "message_id": row.message_id,
            "type": row.routing_key,
            "correlation_id": row.correlation_id,
            "timestamp": int(time.time()),
            "content_type": CONTENT_TYPE,
            "app_id": f"partsflow-{self.db.service}",
            "delivery_mode": 2,
        }

    def _publish_in_process(self, rows: Sequence[OutboxRow]) -> PublishResult:
        from kombu import Producer

        producer = Producer(self._channel)
        for row in rows:
            properties = self._properties(row)
            properties.pop("delivery_mode")
            targets: list[tuple[Any, str]] = []
            if row.exchange != ANSWERS:
                targets.append((self.topology.exchange_for(row.exchange), row.routing_key))
            if row.reply_to:
                targets.append(("", row.reply_to))
            for exchange, routing_key in targets:
                producer.publish(
                    row.body.encode(),
                    exchange=exchange,
                    routing_key=routing_key,
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    delivery_mode=2,
                    retry=False,
                    **{k: v for k, v in properties.items() if k != "content_type"},
                )
        return PublishResult(sent=[row.id for row in rows], failed={})

    def _publish_confirmed(self, rows: Sequence[OutboxRow]) -> PublishResult:
        channel = self._channel
        timeout = self.settings.confirm_timeout
        tag_to_row: dict[int, int] = {}
        acked: set[int] = set()
        nacked: set[int] = set()
        returned: dict[str, str] = {}

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            settle(acked, delivery_tag, multiple)

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            settle(nacked, delivery_tag, multiple)

        def settle(into: set[int], delivery_tag: int, multiple: bool) -> None:
            if multiple:
                into.update(t for t in tag_to_row if t <= delivery_tag)
            else:
                into.add(delivery_tag)

        def on_return(exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
            message_id = message.properties.get("message_id")
            if message_id and exchange:
                returned[message_id] = f"unroutable: {exchange} {routing_key} ({exc})"

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        channel.events["basic_return"].add(on_return)
        try:
            for row in rows:
                # Only a command must reach a queue; an event nobody listens to is fine.
                mandatory = row.exchange == COMMANDS
                targets: list[tuple[str, str, bool]] = []
                if row.exchange != ANSWERS:
                    targets.append(
                        (self.topology.exchange_name(row.exchange), row.routing_key, mandatory)
                    )
                if row.reply_to:
                    targets.append(("", row.reply_to, False))
                for exchange, routing_key, mandatory in targets:
                    message = amqp.Message(row.body.encode(), **self._properties(row))
                    channel.basic_publish(
                        message,
                        exchange=exchange,
                        routing_key=routing_key,
                        mandatory=mandatory,
                        timeout=timeout,
                    )
                    tag_to_row[self._next_tag] = row.id
                    self._next_tag += 1
            deadline = time.monotonic() + timeout
            while len(acked) + len(nacked) < len(tag_to_row):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConfirmTimeout(
                        f"{len(tag_to_row) - len(acked) - len(nacked)} publishes unconfirmed "
                        f"after {timeout}s"
                    )
                try:
                    self._connection.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    continue
        finally:
            channel.events["basic_ack"].discard(on_ack)
            channel.events["basic_nack"].discard(on_nack)
            channel.events["basic_return"].discard(on_return)
        failed_rows = {tag_to_row[tag] for tag in nacked}
        failed: dict[int, str] = {row_id: "nacked by the broker" for row_id in failed_rows}
        for row in rows:
            if row.message_id in returned:
                failed[row.id] = returned[row.message_id]
        return PublishResult(sent=[row.id for row in rows if row.id not in failed], failed=failed)

    # -- waking up and housekeeping ----------------------------------------------------------
    def _listen_for_commits(self, stop: threading.Event) -> None:
        """PostgreSQL NOTIFY after each outbox commit wakes the relay at once."""
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.db.outbox_written.set()
            except psycopg.Error:
                stop.wait(1.0)

    def _replay_recent(self) -> None:
        outbox = self.db.bus.outbox
        since = datetime.now(UTC) - VOLATILE_REPLAY_WINDOW
        try:
            with self.db.engine.begin() as conn:
                # An answer sent again to its queue alone was an event first: the
                # consumers it is replayed for take it from the events exchange.
                conn.execute(
                    update(outbox)
                    .where(outbox.c.sent_at > since)
                    .values(
                        sent_at=None,
                        exchange=case(
                            (outbox.c.exchange == ANSWERS, EVENTS), else_=outbox.c.exchange
                        ),
                    )
                )
        except Exception:
            log.exception("could not replay recent outbox rows")

    def delete_old_rows(self) -> None:
        cutoff = datetime.now(UTC) - RETENTION
        outbox, inbox = self.db.bus.outbox, self.db.bus.inbox
        with self.db.engine.begin() as conn:
            conn.execute(outbox.delete().where(outbox.c.sent_at < cutoff))
            conn.execute(inbox.delete().where(inbox.c.received_at < cutoff))
