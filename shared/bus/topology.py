"""Exchanges and queues, declared in one place.

``<prefix>.events`` and ``<prefix>.commands`` are durable topic exchanges whose
routing key is the message type. Every service has a work queue per purpose
(``<prefix>.<service>.commands``, ``<prefix>.<service>.events``): quorum by default,
with an explicit delivery limit and the dead-letter exchange ``<prefix>.dlx``, which
routes to ``<prefix>.<service>.dead``. Both exchanges are declared exactly as the
contract names them (topic, durable, no arguments), so that any client may declare
them too. Events are published without ``mandatory`` (one nobody listens to is
dropped, as on any topic); a command is published with it, so an unroutable one comes
back to the publisher as an error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue, binding

from shared.config import Settings

log = logging.getLogger("partsflow.bus.topology")

EVENT = "event"
COMMAND = "command"


class TopologyError(RuntimeError):
    """The broker holds an exchange or queue whose settings differ from ours."""


@dataclass(frozen=True)
class QueueSpec:
    """One service's work queue for one purpose, and the message types it binds."""

    service: str
    purpose: str  # "commands" or "events"
    routing_keys: tuple[str, ...]

    @property
    def exchange_kind(self) -> str:
        return COMMAND if self.purpose == "commands" else EVENT


@dataclass(frozen=True)
class Topology:
    prefix: str
    queue_type: str = "quorum"
    delivery_limit: int = 5
    queues: tuple[QueueSpec, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: Settings, queues: Iterable[QueueSpec] = ()) -> Topology:
        return cls(
            prefix=settings.bus_prefix,
            queue_type=settings.queue_type,
            delivery_limit=settings.delivery_limit,
            queues=tuple(queues),
        )

    # -- names -----------------------------------------------------------------------
    def exchange_name(self, kind: str) -> str:
        return f"{self.prefix}.{'commands' if kind in (COMMAND, 'commands') else 'events'}"

    @property
    def dead_letter_exchange_name(self) -> str:
        return f"{self.prefix}.dlx"

    def queue_name(self, spec: QueueSpec) -> str:
        return f"{self.prefix}.{spec.service}.{spec.purpose}"

    def dead_queue_name(self, service: str) -> str:
        return f"{self.prefix}.{service}.dead"

    def services(self) -> list[str]:
        return sorted({spec.service for spec in self.queues})

    def queues_of(self, service: str) -> list[QueueSpec]:
        return [spec for spec in self.queues if spec.service == service]

    # -- kombu entities ----------------------------------------------------------------
    def events_exchange(self) -> Exchange:
        return Exchange(self.exchange_name(EVENT), type="topic", durable=True)

    def commands_exchange(self) -> Exchange:
        return Exchange(self.exchange_name(COMMAND), type="topic", durable=True)

    def exchange_for(self, kind: str) -> Exchange:
        return self.commands_exchange() if kind in (COMMAND, "commands") else self.events_exchange()

    def dead_letter_exchange(self) -> Exchange:
        return Exchange(self.dead_letter_exchange_name, type="direct", durable=True)

    def work_queue_arguments(self, service: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": self.dead_letter_exchange_name,
            "x-dead-letter-routing-key": service,
        }
        if self.queue_type == "quorum":
            # A safety net for crash loops; the consumer dead-letters first.
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def work_queue(self, spec: QueueSpec) -> Queue:
        exchange = self.exchange_for(spec.exchange_kind)
        # Declared before the queues, each on its own: a binding only names it (so an
        # events exchange an earlier version made, taken as it is, is not declared
        # again with other arguments).
        exchange.no_declare = True
        return Queue(
            self.queue_name(spec),
            bindings=[binding(exchange, routing_key=key) for key in spec.routing_keys],
            durable=True,
            queue_arguments=self.work_queue_arguments(spec.service),
        )

    def dead_queue(self, service: str) -> Queue:
        return Queue(
            self.dead_queue_name(service),
            exchange=self.dead_letter_exchange(),
            routing_key=service,
            durable=True,
            queue_arguments={"x-queue-type": self.queue_type},
        )

    def all_queue_names(self) -> list[str]:
        names = [self.queue_name(spec) for spec in self.queues]
        names += [self.dead_queue_name(service) for service in self.services()]
        return names

    # -- declaration -------------------------------------------------------------------
    def declare(self, connection: Connection) -> None:
        """Declare everything (idempotent). A queue that exists with other settings —
        say, without its dead-letter exchange — stops the start-up with a clear error."""
        self._declare_events_exchange(connection)
        channel = connection.channel()
        try:
            self._declare_on(channel)
        except PreconditionFailed as exc:
            raise TopologyError(
                f"the broker's queues or exchanges differ from Partsflow's settings "
                f"(dead-letter exchange, delivery limit, queue type): {exc.reply_text}"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def _declare_events_exchange(self, connection: Connection) -> None:
        """One made by an earlier version, with an alternate exchange, is taken as it
        is: the broker refuses to declare it again without one, and deleting it would
        drop the other services' bindings while they run (docs/operations.md says how
        to replace it, all workers stopped)."""
        channel = connection.channel()
        try:
            self.events_exchange()(channel).declare()
        except PreconditionFailed:
            channel = connection.channel()  # the refusal closed the first one
            self.events_exchange()(channel).declare(passive=True)
            log.warning(
                "%s has arguments of an earlier version; taken as it is",
                self.exchange_name(EVENT),
            )
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def _declare_on(self, channel: Any) -> None:
        self.commands_exchange()(channel).declare()
        self.dead_letter_exchange()(channel).declare()
        for service in self.services():
            self.dead_queue(service)(channel).declare()
        for spec in self.queues:
            self.work_queue(spec)(channel).declare()


def merge_queue_specs(*groups: Sequence[QueueSpec]) -> tuple[QueueSpec, ...]:
    return tuple(spec for group in groups for spec in group)
