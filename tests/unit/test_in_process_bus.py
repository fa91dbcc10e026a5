"""What the in-process transport knows of the messages in it: the embedded system's
write waits until every message its request caused is applied, including the
results of commands it sent, which carry the command's id."""

from __future__ import annotations

import uuid

from kombu import Connection, Exchange, Queue

from services.embedded import InProcessConsequences
from shared.bus.in_process import InProcessTransport


def _queues(prefix: str) -> tuple[Exchange, Queue, Queue]:
    commands = Exchange(f"{prefix}.commands", type="topic")
    events = Exchange(f"{prefix}.events", type="topic")
    return (
        events,
        Queue(f"{prefix}.inventory.commands", commands, routing_key="inventory.reserve"),
        Queue(f"{prefix}.tracking.events", events, routing_key="inventory.#"),
    )


def test_a_write_waits_for_the_results_of_the_commands_it_caused() -> None:
    prefix = f"unit-{uuid.uuid4().hex[:8]}"
    events, command_queue, event_queue = _queues(prefix)
    consequences = InProcessConsequences([], [command_queue.name, event_queue.name])
    request_id, command_id = str(uuid.uuid4()), str(uuid.uuid4())

    with Connection(transport=InProcessTransport) as connection:
        channel = connection.channel()
        for queue in (command_queue, event_queue):
            queue(channel).declare()
        producer = connection.Producer(channel)
        producer.publish(
            b"{}",
            exchange=command_queue.exchange,
            routing_key="inventory.reserve",
            correlation_id=request_id,
            message_id=command_id,
        )
        assert not consequences.wait_until_applied(request_id, timeout=0.05)

        # The command is applied; its result carries the command's id.
        command = command_queue(channel).get(no_ack=False)
        assert command is not None
        producer.publish(
            b"{}",
            exchange=events,
            routing_key="inventory.reservation.confirmed",
            correlation_id=command_id,
            message_id=str(uuid.uuid4()),
        )
        command.ack()
        assert not consequences.wait_until_applied(request_id, timeout=0.05)

        result = event_queue(channel).get(no_ack=False)
        assert result is not None
        assert not consequences.wait_until_applied(request_id, timeout=0.05)
        result.ack()
        assert consequences.wait_until_applied(request_id, timeout=0.05)


def test_an_observers_queue_is_not_waited_for() -> None:
    prefix = f"unit-{uuid.uuid4().hex[:8]}"
    events, _, event_queue = _queues(prefix)
    consequences = InProcessConsequences([], [])
    request_id = str(uuid.uuid4())

    with Connection(transport=InProcessTransport) as connection:
        channel = connection.channel()
        event_queue(channel).declare()
        connection.Producer(channel).publish(
            b"{}",
            exchange=events,
            routing_key="inventory.stock.received",
            correlation_id=request_id,
            message_id=str(uuid.uuid4()),
        )
        assert consequences.wait_until_applied(request_id, timeout=0.05)
        assert event_queue(channel).get(no_ack=True) is not None
