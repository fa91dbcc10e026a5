"""Consumers: apply each message once, ack after commit, never lose one.

One thread owns the broker connection: it receives, acks, rejects and serves
heartbeats. Handlers run on worker threads, so a handler that takes minutes does
not let the connection die. Outcomes:

* applied (or found in the inbox: a duplicate) → ack, after the commit;
* the database is unreachable → retried in place with backoff, without limit and
  without spending a delivery attempt (nothing is dead-lettered for an outage);
* the handler fails otherwise → requeued after a backoff, and dead-lettered once
  the message has had ``delivery_limit`` deliveries;
* the body is not an envelope, or has no handler → dead-lettered at once; a command
  whose data fails validation is answered by its ``*.rejected`` event.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kombu import Consumer as KombuConsumer
from kombu import Producer
from marshmallow import Schema, ValidationError
from structlog.contextvars import bound_contextvars

from shared.bus.connection import connect, connection_errors
from shared.bus.context import MessageContext, NewsOnItsWay, message_context
from shared.bus.envelope import MalformedMessage, decode, usable_id
from shared.bus.store import NO_REPLY_QUEUE, DuplicateDelivery
from shared.bus.topology import COMMAND, EVENT, QueueSpec, Topology, TopologyError
from shared.config import Settings
from shared.db import Database, is_transient_db_error
from shared.errors import InvalidInput

log = logging.getLogger("partsflow.bus.consumer")

# Fields of a refused command repeated in its ``*.rejected`` answer.
REJECTION_ECHOES = ("request_id", "job_id", "part_number", "reservation_id", "shipment_id")

Handler = Callable[[Any, dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class Route:
    """What to do with one message type: validate ``data`` with ``schema``, then call
    ``handle(service, data, envelope)``. ``rejected`` names the event that answers a
    command whose data is invalid."""

    handle: Handler
    schema: type[Schema] | None = None
    kind: str = "event"
    rejected: str | None = None


def queue_specs(service: str, routes: Mapping[str, Route]) -> list[QueueSpec]:
    """The work queues a service's routing table needs."""
    commands = tuple(sorted(t for t, r in routes.items() if r.kind == COMMAND))
    events = tuple(sorted(t for t, r in routes.items() if r.kind != COMMAND))
    specs = []
    if commands:
        specs.append(QueueSpec(service, "commands", commands))
    if events:
        specs.append(QueueSpec(service, "events", events))
    return specs


class Outcome(Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    DEAD = "dead"
    LATER = "later"  # kept unacknowledged and handled again shortly


# How long a message naming something not heard of yet is handed over again, and how
# often: an event on another queue usually arrives within milliseconds.
NEWS_WAIT_SECONDS = 5.0
NEWS_RETRY_SECONDS = 0.2


@dataclass
class Stats:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    rejected: int = 0
    reconnects: int = 0


class MessageConsumer:
    def __init__(
        self,
        *,
        settings: Settings,
        topology: Topology,
        service: str,
        db: Database,
        routes: Mapping[str, Route],
        target: Any,
        threads: int = 1,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.service = service
        self.db = db
        self.routes = dict(routes)
        # Built once: a schema costs more to build than to load a message with.
        self._schemas = {t: r.schema() for t, r in self.routes.items() if r.schema is not None}
        self.target = target
        self.threads = threads
        self.stats = Stats()
        self.connected = threading.Event()
        self._work: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        self._finished: queue.Queue[tuple[int, Any, Outcome, str]] = queue.Queue()
        self._generation = 0
        self._in_flight = 0
        # Set while no delivered message waits or is being handled (background work
        # waits on it, so messages go first).
        self._quiet = threading.Event()
        self._quiet.set()
        self._failures: OrderedDict[str, int] = OrderedDict()
        # When each message waiting for news (NewsOnItsWay) was first handed over.
        self._waiting_since: OrderedDict[str, float] = OrderedDict()
        self.news_wait_seconds = NEWS_WAIT_SECONDS
        self._stop = threading.Event()

    def wait_until_quiet(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until no delivered message is waiting or being
        handled; returns whether it is quiet."""
        return self._quiet.wait(timeout)

    # -- the connection thread --------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        workers = [
            threading.Thread(
                target=self._work_loop, name=f"{self.service}-handler-{i}", daemon=True
            )
            for i in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        backoff = self.settings.retry_backoff_seconds
        try:
            while not stop.is_set():
                try:
                    self._consume(stop)
                    backoff = self.settings.retry_backoff_seconds
                except TopologyError:
                    raise
                except Exception as exc:
                    self.connected.clear()
                    self.stats.reconnects += 1
                    log.warning(
                        "consumer lost the broker, reconnecting: %r",
                        exc,
                        extra={"service": self.service},
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.settings.max_retry_backoff_seconds)
        finally:
            self.connected.clear()
            for _ in workers:
                self._work.put(None)
            for worker in workers:
                worker.join(timeout=10)

    def _consume(self, stop: threading.Event) -> None:
        connection = connect(self.settings, name=f"{self.service}-consumer")
        stopped = False
        try:
            connection.ensure_connection(max_retries=1)
            self.topology.declare(connection)
            channel = connection.channel()
            channel.basic_qos(0, self.settings.consumer_prefetch, False)
            self._generation += 1
            generation = self._generation
            self._in_flight = 0
            self._quiet.set()
            queues = [
                self.topology.work_queue(spec) for spec in self.topology.queues_of(self.service)
            ]

            def received(message: Any) -> None:
                self._in_flight += 1
                self._quiet.clear()
                self._work.put((generation, message))

            consumer = KombuConsumer(channel, queues=queues, on_message=received, no_ack=False)
            consumer.consume()
            self.connected.set()
            errors = connection_errors(connection)
            last_heartbeat = time.monotonic()
            # In process, a handled message is acknowledged within a poll of the queues:
            # the embedded system answers a write once what it caused is acknowledged.
            drain_seconds = 0.005 if self.settings.is_memory_bus else 0.05
            while not stop.is_set():
                self._settle(generation, channel)
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=drain_seconds)
                if time.monotonic() - last_heartbeat > 1.0:
                    connection.heartbeat_check()
                    last_heartbeat = time.monotonic()
            # Stopping: take no more, let what is being handled finish and settle.
            with contextlib.suppress(errors):
                consumer.cancel()
            deadline = time.monotonic() + 30
            while self._in_flight > 0 and time.monotonic() < deadline:
                self._settle(generation, channel, wait=0.1)
            stopped = True
        finally:
            self.connected.clear()
            # What this connection delivered is the broker's again: nothing is in hand.
            self._quiet.set()
            with contextlib.suppress(Exception):
                if stopped:
                    connection.release()
                else:
                    # A link that failed gets no closing handshake: on a dead link the
                    # broker's answer never comes, and release() would wait for it forever.
                    connection.collect()

    def _settle(self, generation: int, channel: Any, wait: float = 0.0) -> None:
        while True:
            try:
                done_generation, message, outcome, reason = self._finished.get(timeout=wait)
            except queue.Empty:
                return
            wait = 0.0
            if done_generation != generation:
                # Received on a connection that is gone: the broker redelivers it, and
                # the inbox makes the repeat harmless.
                continue
            self._in_flight -= 1
            if self._in_flight == 0:
                self._quiet.set()
            if outcome is Outcome.ACK:
                message.ack()
            elif outcome is Outcome.REQUEUE:
                message.reject(requeue=True)
            else:
                self._dead_letter(channel, message, reason)

    def _dead_letter(self, channel: Any, message: Any, reason: str) -> None:
        self.stats.dead_lettered += 1
        log.error(
            "message dead-lettered: %s",
            reason,
            extra={
                "service": self.service,
                "message_id": message.properties.get("message_id"),
                "type": message.properties.get("type"),
            },
        )
        if self.settings.is_memory_bus:
            # The in-process transport has no dead-letter exchange: move it there ourselves.
            headers = dict(message.headers or {})
            headers["x-partsflow-dead-reason"] = reason[:500]
            Producer(channel).publish(
                message.body,
                exchange=self.topology.dead_letter_exchange(),
                routing_key=self.service,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                retry=False,
            )
            message.ack()
        else:
            message.reject(requeue=False)

    # -- the handler threads ---------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            generation, message = item
            try:
                outcome, reason = self.handle(message)
            except Exception as exc:
                log.exception("unexpected consumer failure")
                outcome, reason = Outcome.REQUEUE, repr(exc)
            if outcome is Outcome.LATER:
                # Still unacknowledged and in flight: back in the work queue shortly,
                # while messages behind it go on (a lost connection makes it stale).
                item = (generation, message)
                later = threading.Timer(NEWS_RETRY_SECONDS, self._work.put, (item,))
                later.daemon = True
                later.start()
                continue
            self._finished.put((generation, message, outcome, reason))

    def handle(self, message: Any) -> tuple[Outcome, str]:
        """Apply one delivered message and say what to tell the broker."""
        properties = message.properties or {}
        try:
            envelope = decode(message.body)
        except MalformedMessage as exc:
            # A body that is not even JSON still has the AMQP properties it came with.
            command_type = properties.get("type") or _routing_key(message)
            command_id = exc.message_id or usable_id(properties.get("message_id"))
            self._reject_unreadable(
                command_type, command_id, properties, {"_envelope": [exc.reason]}
            )
            return Outcome.DEAD, f"malformed: {exc.reason}"
        route = self.routes.get(envelope["type"])
        if route is None:
            # Sent under a command's routing key: its sender is told, by that command's
            # answer, as well as the message going to the dead-letter queue.
            self._reject_unreadable(
                _routing_key(message),
                envelope["id"],
                properties,
                {"type": [f"{envelope['type']} is not a command this service takes"]},
            )
            return Outcome.DEAD, f"no handler for {envelope['type']}"
        misrouted = self._misrouted(message, envelope["type"], route)
        if misrouted is not None:
            # Not that command, so not recorded as handled: the message whose id it
            # bears may yet come the way it should.
            self._reject_unreadable(
                _routing_key(message),
                envelope["id"],
                properties,
                {"type": [misrouted]},
                recorded=False,
            )
            return Outcome.DEAD, misrouted
        data = envelope["data"]
        schema = self._schemas.get(envelope["type"])
        if schema is not None:
            try:
                data = schema.load(envelope["data"])
            except ValidationError as err:
                if route.rejected:
                    self._answer_rejected(
                        route,
                        envelope["id"],
                        envelope["type"],
                        properties,
                        err.normalized_messages(),
                        request=envelope["data"],
                    )
                    return Outcome.ACK, "rejected"
                return Outcome.DEAD, f"invalid data: {err.normalized_messages()}"
        now = time.monotonic()
        waited = now - self._waiting_since.get(envelope["id"], now)
        context = MessageContext(
            correlation_id=envelope["id"] if route.kind == COMMAND else envelope["correlationid"],
            inbox_message_id=envelope["id"],
            inbox_message_type=envelope["type"],
            reply_to=_reply_to(properties) if route.kind == COMMAND else None,
            can_wait_for_news=waited < self.news_wait_seconds,
        )
        # Every log line about this message names it and the request or command
        # that started the work, so one id follows a reservation across services.
        with bound_contextvars(
            correlation_id=context.correlation_id,
            message_id=envelope["id"],
            message_type=envelope["type"],
        ):
            started = time.perf_counter()
            try:
                with message_context(context):
                    self._through_outages(lambda: route.handle(self.target, data, envelope))
            except DuplicateDelivery:
                self.stats.duplicates += 1
                if route.kind == COMMAND:
                    self._answer_again(envelope["id"], context.reply_to)
                return Outcome.ACK, "duplicate"
            except NewsOnItsWay:
                self._waiting_since.setdefault(envelope["id"], time.monotonic())
                while len(self._waiting_since) > 10_000:
                    self._waiting_since.popitem(last=False)
                return Outcome.LATER, "waiting for news"
            except Exception as exc:
                if is_transient_db_error(exc):
                    return Outcome.REQUEUE, "stopping"
                return self._failed(envelope, message, exc)
            self.stats.applied += 1
            self._failures.pop(envelope["id"], None)
            self._waiting_since.pop(envelope["id"], None)
            log.info(
                "message applied",
                extra={"ms": round((time.perf_counter() - started) * 1000, 2)},
            )
            return Outcome.ACK, "applied"

    def _through_outages(self, work: Callable[[], None]) -> None:
        """Run ``work``, again and again while the database is unreachable: with backoff,
        without limit, and without spending a delivery (an outage is not the message's
        fault). When stopping, the database's error is raised instead."""
        backoff = self.settings.retry_backoff_seconds
        while True:
            try:
                work()
                return
            except Exception as exc:
                if not is_transient_db_error(exc) or self._stop.is_set():
                    raise
                log.warning("database unavailable, retrying: %s", exc.__class__.__name__)
                self.stats.retried += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.max_retry_backoff_seconds)

    def _failed(
        self, envelope: dict[str, Any], message: Any, exc: Exception
    ) -> tuple[Outcome, str]:
        message_id = envelope["id"]
        local = self._failures.get(message_id, 0) + 1
        self._failures[message_id] = local
        self._failures.move_to_end(message_id)
        while len(self._failures) > 10_000:
            self._failures.popitem(last=False)
        broker_count = int((message.headers or {}).get("x-delivery-count") or 0) + 1
        deliveries = max(local, broker_count)
        reason = f"{exc.__class__.__name__}: {exc}"
        log.warning(
            "handler failed (delivery %d of %d): %s",
            deliveries,
            self.settings.delivery_limit,
            reason,
            extra={"service": self.service, "message_id": message_id},
        )
        if deliveries >= self.settings.delivery_limit:
            self._failures.pop(message_id, None)
            return Outcome.DEAD, f"failed {deliveries} times: {reason}"
        self.stats.retried += 1
        self._stop.wait(
            min(
                self.settings.retry_backoff_seconds * 2 ** (deliveries - 1),
                self.settings.max_retry_backoff_seconds,
            )
        )
        return Outcome.REQUEUE, reason

    def _misrouted(self, message: Any, message_type: str, route: Route) -> str | None:
        """A message is taken only as what it was sent as: its routing key is its
        type, and an event cannot come in through the commands exchange (which outside
        systems may be allowed to write to), nor a command through the events one."""
        info = getattr(message, "delivery_info", None) or {}
        exchange, routing_key = info.get("exchange"), info.get("routing_key")
        kind = {
            self.topology.exchange_name(COMMAND): COMMAND,
            self.topology.exchange_name(EVENT): EVENT,
        }.get(exchange)
        if kind is None:
            # Put straight into a queue (a dead letter moved back): its queue says.
            kind = next(
                (
                    spec.exchange_kind
                    for spec in self.topology.queues
                    if self.topology.queue_name(spec) == routing_key
                ),
                None,
            )
        elif routing_key != message_type:
            return f"{message_type} sent under the routing key {routing_key}"
        if kind is not None and kind != route.kind:
            return f"{message_type} is not a {kind} this service takes"
        return None

    def _reject_unreadable(
        self,
        command_type: str | None,
        command_id: str | None,
        properties: Mapping[str, Any],
        errors: dict[str, list[str]],
        *,
        recorded: bool = True,
    ) -> None:
        route = self.routes.get(command_type or "")
        if not (command_id and command_type and route is not None and route.rejected):
            return
        try:
            self._answer_rejected(
                route,
                command_id,
                command_type,
                properties,
                errors,
                request=None,
                recorded=recorded,
            )
        except Exception:
            # The message goes to the dead-letter queue all the same.
            log.exception("could not answer an unreadable command", extra={"id": command_id})

    def _answer_rejected(
        self,
        route: Route,
        command_id: str,
        command_type: str,
        properties: Mapping[str, Any],
        errors: Any,
        *,
        request: Mapping[str, Any] | None,
        recorded: bool = True,
    ) -> None:
        """``recorded``: the answer also records the command as handled (its inbox
        row), so that a repeat is answered again rather than judged anew."""
        self.stats.rejected += 1
        context = MessageContext(
            correlation_id=command_id,
            inbox_message_id=command_id if recorded else None,
            inbox_message_type=command_type,
            reply_to=_reply_to(properties),
        )

        def answer() -> None:
            with message_context(context), self.db.transaction() as tx:
                tx.publish(
                    route.rejected or "",
                    subject=command_id,
                    data={
                        "command_id": command_id,
                        "status": "rejected",
                        "reason": InvalidInput.type_slug,
                        "detail": "the command's data is invalid",
                        "errors": errors,
                        # What the sender matches its answers by, when it said it.
                        **{
                            name: request[name]
                            for name in REJECTION_ECHOES
                            if isinstance((request or {}).get(name), str)
                        },
                    },
                )

        try:
            self._through_outages(answer)
        except DuplicateDelivery:
            self._answer_again(command_id, context.reply_to)

    def _answer_again(self, command_id: str, reply_to: str | None) -> None:
        """A command that came again, from a sender that lost the answer: the answer
        goes out again."""
        if reply_to:
            self._through_outages(lambda: self.db.send_answers_again(command_id, reply_to))


def _reply_to(properties: Mapping[str, Any]) -> str:
    """Where a command's answers also go (its answers are marked as such either way)."""
    return properties.get("reply_to") or NO_REPLY_QUEUE


def _routing_key(message: Any) -> str | None:
    return (message.delivery_info or {}).get("routing_key")
