"""A field-service client of the bus, as another system would write it: publishes
commands with publisher confirms and reads answers from its own reply queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection, Exchange, Queue

from shared.bus.envelope import CONTENT_TYPE, make_envelope


class BusClient:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.connection = Connection(
            url, connect_timeout=5, heartbeat=0, transport_options={"confirm_publish": True}
        )
        self.reply_queue_name = f"{prefix}.test-replies.{uuid.uuid4().hex[:6]}"
        self.replies: list[dict[str, Any]] = []
        self.taps: list[str] = []

    def open(self) -> BusClient:
        self.connection.ensure_connection(max_retries=3)
        self.declare_reply_queue()
        return self

    def declare_reply_queue(self) -> None:
        with self.connection.channel() as channel:
            Queue(self.reply_queue_name, durable=True, auto_delete=False)(channel).declare()

    def tap(self, routing_key: str) -> str:
        """A queue of this listener's own on the events exchange, as a control tower
        binds one; its name, for :meth:`drain_queue`."""
        name = f"{self.prefix}.test-tap.{uuid.uuid4().hex[:6]}"
        with self.connection.channel() as channel:
            Queue(
                name,
                exchange=Exchange(f"{self.prefix}.events", type="topic", durable=True),
                routing_key=routing_key,
                durable=True,
                auto_delete=False,
            )(channel).declare()
        self.taps.append(name)
        return name

    def close(self) -> None:
        try:
            with self.connection.channel() as channel:
                for name in (self.reply_queue_name, *self.taps):
                    channel.queue_delete(name)
        except Exception:
            pass
        self.connection.release()

    def command(
        self,
        type: str,
        data: dict[str, Any],
        *,
        message_id: str | None = None,
        reply: bool = True,
    ) -> str:
        """Publish a command and wait for the broker's confirm; return its id."""
        envelope = make_envelope(type, source="field-service/test", data=data, id=message_id)
        self.publish_raw(
            json.dumps(envelope).encode(), type=type, message_id=envelope["id"], reply=reply
        )
        return envelope["id"]

    def publish_raw(
        self,
        body: bytes,
        *,
        type: str,
        message_id: str | None,
        reply: bool = True,
        exchange: str = "commands",
    ) -> None:
        producer = self.connection.Producer()
        producer.publish(
            body,
            exchange=Exchange(f"{self.prefix}.{exchange}", type="topic", durable=True),
            routing_key=type,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=message_id,
            type=type,
            reply_to=self.reply_queue_name if reply else None,
            mandatory=True,
            retry=False,
            declare=[],
        )

    def collect_replies(
        self, until: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list:
        """Read answers until ``until(replies)`` holds or the time is up."""
        import time

        deadline = time.monotonic() + timeout
        with self.connection.channel() as channel:
            queue = Queue(self.reply_queue_name, durable=True)(channel)
            while not until(self.replies) and time.monotonic() < deadline:
                message = queue.get(no_ack=True)
                if message is None:
                    time.sleep(0.02)
                    continue
                self.replies.append(json.loads(message.body))
        return self.replies

    def drain_queue(self, name: str) -> list[Any]:
        """Take every message now in a queue (say a ``.dead`` one)."""
        messages = []
        with self.connection.channel() as channel:
            queue = Queue(name, no_declare=True)(channel)
            while True:
                message = queue.get(no_ack=True)
                if message is None:
                    return messages
                messages.append(message)
