"""The one-process system: the three apps under their prefixes, the in-process bus,
and every service's relay, consumer and scheduler on background threads.

The code paths are those of production; only the URLs in the settings differ.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from services import bootstrap
from shared.clock import Clock
from shared.config import ConfigError, Settings, ensure_data_dir, ensure_embedded_secret
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
        self.wsgi = PrefixDispatcher(dict(self.apps), default=self.apps["tracking"])
        self.workers: dict[str, Worker] = {
            name: bootstrap.create_worker(name, self.settings, service=self.services[name])
            for name in bootstrap.SERVICES
        }
        self.stop = threading.Event()

    def start_background(self) -> None:
        for worker in self.workers.values():
            worker.start(self.stop)

    def close(self) -> None:
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
