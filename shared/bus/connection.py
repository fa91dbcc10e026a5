"""Broker connections: kombu over py-amqp for RabbitMQ, kombu's in-process transport
for the embedded mode."""

from __future__ import annotations

import socket

from amqp.exceptions import ConnectionError as AMQPConnectionError
from amqp.exceptions import RecoverableConnectionError
from kombu import Connection

from shared.bus.in_process import InProcessTransport
from shared.config import Settings

HEARTBEAT_SECONDS = 20
CONNECT_TIMEOUT_SECONDS = 5

# What a lost or broken connection raises: reconnect and carry on.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    socket.timeout,
    AMQPConnectionError,
    RecoverableConnectionError,
    ConnectionError,
)


def connect(settings: Settings, *, name: str) -> Connection:
    """A new, not yet opened connection; the caller owns it (one per thread)."""
    if settings.is_memory_bus:
        return Connection(
            "memory://", transport=InProcessTransport, transport_options={"polling_interval": 0.005}
        )
    return Connection(
        settings.broker_url,
        heartbeat=HEARTBEAT_SECONDS,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        transport_options={"client_properties": {"connection_name": name}},
    )


def connection_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    return (
        CONNECTION_ERRORS + tuple(connection.connection_errors) + tuple(connection.channel_errors)
    )
