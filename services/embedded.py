"""The one-process system: the three apps under their prefixes, the in-process bus,
and every service's relay, consumer and scheduler on background threads.

The code paths are those of production; only the URLs in the settings differ.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from services import bootstrap
from shared.bus.in_process import InProcessChannel
from shared.clock import Clock
from shared.config import ConfigError, Settings, ensure_data_dir, ensure_embedded_secret
from shared.db import Database
from shared.web import CORRELATION_ENVIRON_KEY, WRITE_METHODS
from shared.worker import Worker

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

log = logging.getLogger("partsflow.embedded")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PrefixDispatcher:
    """Send each request to the app that owns its first path segment; everything
    else (``/``, ``/login``) goes to the default app. Paths are not rewritten: each
    app serves its own prefix, as it does behind the gateway."""

    def __init__(self, apps: dict[str, WSGIApp], default: WSGIApp) -> None:
        self.apps = apps
        self.default = default

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        segment = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
        return self.apps.get(segment, self.default)(environ, start_response)


# How long a write's answer waits for the services to apply what it caused, at most.
APPLIED_WAIT_SECONDS = 2.0
APPLIED_POLL_SECONDS = 0.003


class InProcessConsequences:
    """Whether the messages a request caused (and those they caused in turn: they
    share its correlation id) are all applied, on the in-process bus."""

    def __init__(self, databases: Sequence[Database], work_queues: Sequence[str]) -> None:
        self.databases = list(databases)
        self.work_queues = list(work_queues)
        self.on_their_way = InProcessChannel.on_their_way
        self.on_their_way.watch(self.work_queues)
        # Set while the relays and consumers run: without them nothing would come.
        self.flowing = threading.Event()

    def wait_until_applied(self, correlation_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            followed = self.on_their_way.followed(correlation_id)
            last_moves = [self.on_their_way.last_move(c) for c in followed]
            # The databases last: while a message is in hand or queued, no need to ask.
            on_the_way = (
                any(self.on_their_way.in_hand(c) for c in followed)
                or any(self.on_their_way.queued(c, self.work_queues) for c in followed)
                or self._unsent(followed)
            )
            # Nothing moved while looking: the picture is a true one.
            if (
                not on_the_way
                and self.on_their_way.followed(correlation_id) == followed
                and [self.on_their_way.last_move(c) for c in followed] == last_moves
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(APPLIED_POLL_SECONDS)

    def _unsent(self, correlation_ids: set[str]) -> bool:
        for db in self.databases:
            outbox = db.bus.outbox
            unsent = (
                select(outbox.c.id)
                .where(outbox.c.correlation_id.in_(correlation_ids), outbox.c.sent_at.is_(None))
                .limit(1)
            )
            with db.engine.connect() as conn:
                if conn.execute(unsent).first() is not None:
                    return True
        return False


class AnsweredWhenApplied:
    """Answer a write once every service has applied what it caused (or after
    ``APPLIED_WAIT_SECONDS``), so that whoever reads next, here or in another service,
    sees it: in one process there is no reason to show a person the bus's delay."""

    def __init__(self, app: WSGIApp, consequences: InProcessConsequences) -> None:
        self.app = app
        self.consequences = consequences

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.app(environ, start_response)
        correlation_id = environ.get(CORRELATION_ENVIRON_KEY)
        if (
            environ.get("REQUEST_METHOD") in WRITE_METHODS
            and correlation_id
            and self.consequences.flowing.is_set()
        ):
            self.consequences.wait_until_applied(correlation_id, APPLIED_WAIT_SECONDS)
        return body


class EmbeddedSystem:
    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        ensure_data_dir(settings)
        self.settings = ensure_embedded_secret(settings)
        for name in bootstrap.SERVICES:
            _upgrade_database(name, self.settings)
        self.services = {
            name: bootstrap.open_service(name, self.settings, clock) for name in bootstrap.SERVICES
        }
        self.apps: dict[str, Flask] = {
            name: module.create_app(settings=self.settings, service=self.services[name])
            for name, module in bootstrap.SERVICES.items()
        }
        self.wsgi: WSGIApp = PrefixDispatcher(dict(self.apps), default=self.apps["tracking"])
        self.consequences: InProcessConsequences | None = None
        if self.settings.is_memory_bus:
            topology = bootstrap.bus_topology(self.settings)
            self.consequences = InProcessConsequences(
                [service.db for service in self.services.values()],
                [topology.queue_name(spec) for spec in topology.queues],
            )
            self.wsgi = AnsweredWhenApplied(self.wsgi, self.consequences)
        self.workers: dict[str, Worker] = {
            name: bootstrap.create_worker(name, self.settings, service=self.services[name])
            for name in bootstrap.SERVICES
        }
        self.stop = threading.Event()

    def start_background(self) -> None:
        for worker in self.workers.values():
            worker.start(self.stop)
        if self.consequences is not None:
            self.consequences.flowing.set()

    def close(self) -> None:
        if self.consequences is not None:
            self.consequences.flowing.clear()
        self.stop.set()
        for worker in self.workers.values():
            worker.join(timeout=10)
        for service in self.services.values():
            service.db.dispose()

    def __enter__(self) -> EmbeddedSystem:
        self.start_background()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def listen(self, host: str, port: int) -> BaseWSGIServer:
        """Take the address now, so that one in use stops start-up before anything
        (demo users' one-time passwords, say) is said."""
        from werkzeug.serving import make_server, select_address_family

        # Bound here rather than by werkzeug, which prints and exits on a port in use.
        family = select_address_family(host, port)
        with socket.create_server((host, port), family=family) as bound:
            return make_server(host, port, self.wsgi, threaded=True, fd=bound.fileno())

    def serve(self, server: BaseWSGIServer) -> None:
        stopper = threading.Thread(
            target=lambda: (self.stop.wait(), server.shutdown()), daemon=True
        )
        stopper.start()
        server.serve_forever()


def _upgrade_database(name: str, settings: Settings) -> None:
    """Bring one service's schema up to date, or stop start-up with one line that
    names the setting of the database that cannot be opened."""
    try:
        bootstrap.upgrade_databases(settings, [name])
    except (OperationalError, InterfaceError, OSError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        url = make_url(settings.db_url(name)).render_as_string(hide_password=True)
        raise ConfigError(
            f"PARTSFLOW_{name.upper()}_DB_URL: cannot open the {name} database {url}: {reason}"
        ) from None
