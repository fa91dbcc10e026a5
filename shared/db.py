"""One database per service: engine, sessions, the transaction helper, migrations.

A write transaction is where state and the events announcing it are committed
together (the transactional outbox), and where a consumed message is recorded in
the inbox so that a redelivery changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, create_engine, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared.bus.store import ANSWERS, BusTables, DuplicateDelivery, Transaction

# Constraint names every service's metadata uses, so migrations name them the same way.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def build_engine(url: str, *, pool_size: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )
        _make_sqlite_transactional(engine)
        return engine
    engine = create_engine(
        parsed.set(drivername="postgresql+psycopg"),
        pool_size=pool_size,
        max_overflow=10,
        pool_recycle=1800,
    )
    _ping_idle_connections(engine)
    return engine


# A connection back in use within this long skips the ping: under load, a round trip
# per transaction saved; a server restart takes longer than this, so a connection that
# lived through one has been idle long enough to be pinged.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling, only for connections that sat idle: a dead one
    is replaced before it is handed out (an error in a transaction invalidates the pool
    the same way, so a busy pool does not keep dead connections either)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is not None and time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and checks out another (or a new one).
            raise DisconnectionError(str(exc)) from exc


def _make_sqlite_transactional(engine: Engine) -> None:
    """SQLite takes the write lock up front (BEGIN IMMEDIATE) so two writers never
    deadlock upgrading a read lock; WAL lets readers go on meanwhile."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        reading = conn.get_execution_options().get("partsflow_read", False)
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def is_transient_db_error(exc: BaseException) -> bool:
    """True when the database (not the data) is the problem: down, restarting, locked."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Database:
    """The database of one service."""

    def __init__(self, url: str, *, service: str, bus: BusTables, pool_size: int = 5) -> None:
        self.url = url
        self.service = service
        self.bus = bus
        self.engine = build_engine(url, pool_size=pool_size)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._write_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(partsflow_read=True), expire_on_commit=False
        )
        # Set after a commit that wrote outbox rows; an in-process relay waits on it.
        self.outbox_written = threading.Event()
        self._after_commit: list[Callable[[], None]] = []

    def on_outbox_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction; commits when the block ends without an exception."""
        session = self._write_sessions()
        tx = Transaction(session, self.bus, source=f"partsflow/{self.service}")
        try:
            tx.begin()
            yield tx
            tx.write_pending()
            session.flush()
            try:
                session.commit()
            except Exception as exc:
                # Lost at COMMIT: whether it took effect is not known here.
                exc.partsflow_commit_in_doubt = True  # type: ignore[attr-defined]
                raise
            tx.committed()
        except Exception as exc:
            session.rollback()
            message_id = tx.inbox_message_id
            if (
                message_id is not None
                and not isinstance(exc, DuplicateDelivery)
                and not is_transient_db_error(exc)
                and self._in_inbox(message_id)
            ):
                # The inbox row is written last, so a message applied before may first
                # trip over its own effects (a unique key, a rule): still a duplicate.
                raise DuplicateDelivery(message_id) from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        if tx.outbox_rows:
            self.outbox_written.set()
            for callback in self._after_commit:
                callback()

    def send_answers_again(self, command_id: str, reply_to: str) -> int:
        """A command that came again (its sender lost the answer, often with the
        connection its reply queue lived on): the relay sends its answers once more, to
        the ``reply_to`` it names now; an answer the events exchange has had already
        goes there alone. How many there were."""
        outbox = self.bus.outbox
        with self.engine.begin() as conn:
            # One statement: a relay publishing the row holds it locked, and this then
            # takes the row as that relay left it (sent: to the new queue alone).
            count = conn.execute(
                update(outbox)
                .where(outbox.c.correlation_id == command_id, outbox.c.reply_to.is_not(None))
                .values(
                    exchange=case((outbox.c.sent_at.is_(None), outbox.c.exchange), else_=ANSWERS),
                    reply_to=reply_to,
                    sent_at=None,
                    available_at=None,
                )
            ).rowcount
        if count:
            self.outbox_written.set()
            for callback in self._after_commit:
                callback()
        return count

    def _in_inbox(self, message_id: str) -> bool:
        inbox = self.bus.inbox
        with self.engine.execution_options(partsflow_read=True).connect() as conn:
            found = conn.execute(
                select(inbox.c.message_id).where(inbox.c.message_id == message_id)
            ).first()
        return found is not None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session: nothing it does is committed."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            # close() ends the transaction without expiring what was read.
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def upgrade(service: str, url: str, migrations_dir: Path, revision: str = "head") -> None:
    """Bring one service's schema to ``revision`` (Alembic, one history per service)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(migrations_dir / "versions"))
    config.attributes["partsflow_url"] = url
    config.attributes["partsflow_service"] = service
    command.upgrade(config, revision)


def run_migrations(target_metadata: Any) -> None:
    """The body of every service's ``migrations/env.py``.

    On PostgreSQL an advisory lock makes concurrent start-ups take turns.
    """
    from alembic import context

    config = context.config
    url = config.attributes.get("partsflow_url") or config.get_main_option("sqlalchemy.url")
    service = config.attributes.get("partsflow_service", "partsflow")
    engine = build_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": f"migrate:{service}"}
                )
                connection.commit()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=engine.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:name))"),
                    {"name": f"migrate:{service}"},
                )
                connection.commit()
    finally:
        engine.dispose()


def rewrite_names(
    table: str, key: str, columns: tuple[str, ...], spelling: Callable[[str], str]
) -> None:
    """In a migration: rewrite ``columns`` of every row of ``table`` (``key`` is its
    primary key) in the spelling the code now keeps them in. Nulls stay null."""
    from alembic import op
    from sqlalchemy import bindparam, column
    from sqlalchemy import table as table_clause

    rows = table_clause(table, column(key), *(column(c) for c in columns))
    connection = op.get_bind()
    changes = []
    for row in connection.execute(select(rows)).mappings():
        spelled = {c: spelling(row[c]) if row[c] is not None else None for c in columns}
        if any(spelled[c] != row[c] for c in columns):
            changes.append({"row_key": row[key], **{f"new_{c}": spelled[c] for c in columns}})
    if changes:
        connection.execute(
            update(rows)
            .where(rows.c[key] == bindparam("row_key"))
            .values({c: bindparam(f"new_{c}") for c in columns}),
            changes,
        )
