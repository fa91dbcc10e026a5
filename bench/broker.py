"""The broker side of the benchmark, in raw pika: publishing with confirms, consuming
with acks, counting consumers, and removing a run's queues and exchanges.

pika and not kombu: the bus ceiling must be the broker's own speed through a bare
client, with a window of unconfirmed publishes that kombu's blocking confirms do not
offer. The services' topology itself is declared with their own code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
import pika.spec

from services import bootstrap
from shared.bus.connection import connect
from shared.config import Settings

CONFIRM_WINDOW = 256


@dataclass(frozen=True)
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties


@dataclass(frozen=True)
class Consumed:
    count: int
    first: float
    last: float

    @property
    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.last > self.first else 0.0


def parameters(url: str) -> pika.ConnectionParameters:
    """Connection parameters for a broker URL read as kombu reads it (``amqp://h//``
    is the virtual host ``/``)."""
    parts = urlsplit(url)
    return pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        virtual_host=unquote(parts.path[1:]) or "/",
        credentials=pika.PlainCredentials(
            unquote(parts.username or "guest"), unquote(parts.password or "guest")
        ),
        heartbeat=60,
        blocked_connection_timeout=60,
    )


def declare_topology(settings: Settings) -> None:
    """Every service's exchanges and queues, as the workers declare them."""
    connection = connect(settings, name="bench-declare")
    try:
        connection.ensure_connection(max_retries=3)
        bootstrap.bus_topology(settings).declare(connection)
    finally:
        connection.release()


def declare_queue(url: str, name: str, arguments: dict[str, Any]) -> None:
    with pika.BlockingConnection(parameters(url)) as connection:
        connection.channel().queue_declare(name, durable=True, arguments=arguments)


def queue_state(url: str, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of an existing queue."""
    with pika.BlockingConnection(parameters(url)) as connection:
        frame = connection.channel().queue_declare(name, passive=True)
        return frame.method.message_count, frame.method.consumer_count


class _ConfirmedPublisher:
    """Publishes on a confirm-mode channel keeping at most ``window`` unconfirmed."""

    def __init__(self, url: str, messages: Sequence[Outgoing], window: int) -> None:
        self.params = parameters(url)
        self.messages = messages
        self.window = window
        self.published = 0
        self.unconfirmed: set[int] = set()
        self.nacked = 0
        self.error: BaseException | str | None = None
        self.connection: Any = None
        self.channel: Any = None

    def run(self) -> None:
        self.connection = pika.SelectConnection(
            self.params,
            on_open_callback=self._opened,
            on_open_error_callback=self._failed,
            on_close_callback=self._closed,
        )
        self.connection.ioloop.start()
        if self.error is not None:
            raise RuntimeError(f"publishing failed: {self.error}")
        if self.nacked:
            raise RuntimeError(f"the broker refused {self.nacked} publishes")

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._confirmed, callback=self._fill)

    def _fill(self, _frame: Any = None) -> None:
        while self.published < len(self.messages) and len(self.unconfirmed) < self.window:
            message = self.messages[self.published]
            self.channel.basic_publish(
                message.exchange, message.routing_key, message.body, message.properties
            )
            self.published += 1
            # A confirm-mode channel numbers its publishes from 1.
            self.unconfirmed.add(self.published)
        if self.published == len(self.messages) and not self.unconfirmed:
            self.connection.close()

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += 1
        if method.multiple:
            self.unconfirmed = {tag for tag in self.unconfirmed if tag > method.delivery_tag}
        else:
            self.unconfirmed.discard(method.delivery_tag)
        self._fill()

    def _channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if self.published < len(self.messages) or self.unconfirmed:
            self.error = reason
            self.connection.close()

    def _failed(self, connection: Any, error: BaseException) -> None:
        self.error = error
        connection.ioloop.stop()

    def _closed(self, connection: Any, _reason: BaseException) -> None:
        connection.ioloop.stop()


def publish_confirmed(
    url: str, messages: Sequence[Outgoing], window: int = CONFIRM_WINDOW
) -> float:
    """Publish every message and wait until the broker confirmed all; return the
    seconds it took."""
    started = time.perf_counter()
    _ConfirmedPublisher(url, messages, window).run()
    return time.perf_counter() - started


def consume_acked(url: str, queue: str, count: int, prefetch: int, timeout: float) -> Consumed:
    """Take ``count`` messages from ``queue``, acking each, with ``prefetch`` in flight."""
    first = last = 0.0
    taken = 0
    with pika.BlockingConnection(parameters(url)) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        for method, _properties, _body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            last = time.perf_counter()
            first = first or last
            taken += 1
            if taken >= count:
                break
        channel.cancel()
    if taken < count:
        raise RuntimeError(f"only {taken} of {count} messages came from {queue}")
    return Consumed(taken, first, last)


def delete(url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Remove a run's queues and exchanges, whichever of them exist."""
    with pika.BlockingConnection(parameters(url)) as connection:
        channel = connection.channel()
        for name in queues:
            try:
                channel.queue_delete(name)
            except pika.exceptions.ChannelClosed:
                channel = connection.channel()
        for name in exchanges:
            try:
                channel.exchange_delete(name)
            except pika.exceptions.ChannelClosed:
                channel = connection.channel()


def run_names(settings: Settings) -> tuple[list[str], list[str]]:
    """The queues and exchanges the services declare under this settings' prefix."""
    topology = bootstrap.bus_topology(settings)
    exchanges = [
        topology.exchange_name("event"),
        topology.exchange_name("command"),
        topology.dead_letter_exchange_name,
    ]
    return topology.all_queue_names(), exchanges
