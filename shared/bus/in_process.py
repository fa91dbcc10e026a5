"""The in-process transport of the one-process system, and what it knows of the
messages in it: whether what a request caused is still on its way between the
services, so that the embedded system answers a write once every service has
applied it (a script or a person reading right after sees it everywhere).

A message is on its way while it is unsent in an outbox (the relay marks it sent only
after putting it in a queue), waits in a work queue, or is taken by a consumer and not
yet acknowledged (its handler commits what it causes before the ack). Each of these
moves bumps its correlation id's count of moves, so a reader can tell a still picture
from one taken while the messages moved.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from queue import Empty
from typing import Any, ClassVar

from kombu.transport import memory

# Correlation ids whose moves are remembered; a reader's picture takes milliseconds,
# far less than this many other requests' messages take to move.
REMEMBERED_CORRELATIONS = 10_000


class MessagesOnTheirWay:
    """Messages taken from the watched work queues and not yet acknowledged, by
    correlation id, and each correlation id's latest move."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: Counter[str] = Counter()
        self._moves: OrderedDict[str, int] = OrderedDict()
        self._clock = itertools.count(1)
        self._watched: set[str] = set()
        # A command's result is correlated to the command's own id, not to what sent
        # it: the ids of the commands each correlation id sent, to follow them too.
        self._commands_sent: OrderedDict[str, set[str]] = OrderedDict()

    def watch(self, queue_names: Iterable[str]) -> None:
        """The work queues whose consumers apply messages (not, say, an observer's)."""
        with self._lock:
            self._watched.update(queue_names)

    def is_watched(self, queue_name: str) -> bool:
        return queue_name in self._watched

    def moved(self, correlation_id: str | None) -> None:
        if correlation_id is None:
            return
        with self._lock:
            self._note_move(correlation_id)

    def taken(self, correlation_id: str | None) -> None:
        if correlation_id is None:
            return
        with self._lock:
            self._taken[correlation_id] += 1
            self._note_move(correlation_id)

    def settled(self, correlation_id: str | None) -> None:
        if correlation_id is None:
            return
        with self._lock:
            if self._taken[correlation_id] <= 1:
                self._taken.pop(correlation_id, None)
            else:
                self._taken[correlation_id] -= 1
            self._note_move(correlation_id)

    def command_sent(self, correlation_id: str | None, command_id: str | None) -> None:
        if correlation_id is None or command_id is None or command_id == correlation_id:
            return
        with self._lock:
            self._commands_sent.setdefault(correlation_id, set()).add(command_id)
            self._commands_sent.move_to_end(correlation_id)
            while len(self._commands_sent) > REMEMBERED_CORRELATIONS:
                self._commands_sent.popitem(last=False)
            self._note_move(correlation_id)

    def followed(self, correlation_id: str) -> set[str]:
        """``correlation_id`` and those of the results of the commands it caused, in
        turn."""
        with self._lock:
            found = {correlation_id}
            ahead = [correlation_id]
            while ahead:
                for command_id in self._commands_sent.get(ahead.pop(), ()):
                    if command_id not in found:
                        found.add(command_id)
                        ahead.append(command_id)
            return found

    def _note_move(self, correlation_id: str) -> None:
        self._moves[correlation_id] = next(self._clock)
        self._moves.move_to_end(correlation_id)
        while len(self._moves) > REMEMBERED_CORRELATIONS:
            self._moves.popitem(last=False)

    def last_move(self, correlation_id: str) -> int:
        with self._lock:
            return self._moves.get(correlation_id, 0)

    def in_hand(self, correlation_id: str) -> bool:
        with self._lock:
            return correlation_id in self._taken

    def queued(self, correlation_id: str, queue_names: Collection[str]) -> bool:
        for name in queue_names:
            waiting = InProcessChannel.queues.get(name)
            if waiting is None:
                continue
            with waiting.mutex:
                if any(_correlation_id(m) == correlation_id for m in waiting.queue):
                    return True
        return False


class InProcessChannel(memory.Channel):
    """kombu's in-process channel, telling :class:`MessagesOnTheirWay` of each move.
    Process-wide, as the in-process transport's queues are."""

    on_their_way: ClassVar[MessagesOnTheirWay] = MessagesOnTheirWay()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Correlation ids of the messages this channel took from watched queues, by
        # delivery tag (copies of one published message share a tag).
        self._taken_tags: dict[Any, list[str | None]] = {}

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if self.on_their_way.is_watched(queue) and queue.endswith(".commands"):
            self.on_their_way.command_sent(
                _correlation_id(message), message["properties"].get("message_id")
            )
        super()._put(queue, message, **kwargs)
        self.on_their_way.moved(_correlation_id(message))

    def _put_fanout(self, exchange: str, message: Any, routing_key: Any = None, **kw: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kw)
        self.on_their_way.moved(_correlation_id(message))

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        waiting = self._queue_for(queue)
        with waiting.mutex:
            if not waiting.queue:
                raise Empty()
            message = waiting.queue.popleft()
            # Taken under the queue's lock: a reader sees it queued or taken, never neither.
            if self.on_their_way.is_watched(queue):
                correlation_id = _correlation_id(message)
                tag = message["properties"].get("delivery_tag")
                self._taken_tags.setdefault(tag, []).append(correlation_id)
                self.on_their_way.taken(correlation_id)
        return message

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._settled(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        # A message put back is in its queue again before it stops counting as taken.
        super().basic_reject(delivery_tag, requeue=requeue)
        self._settled(delivery_tag)

    def _settled(self, delivery_tag: Any) -> None:
        taken = self._taken_tags.get(delivery_tag)
        if not taken:
            return
        correlation_id = taken.pop()
        if not taken:
            del self._taken_tags[delivery_tag]
        self.on_their_way.settled(correlation_id)


class InProcessTransport(memory.Transport):
    Channel = InProcessChannel


def _correlation_id(message: Any) -> str | None:
    properties = message.get("properties") if isinstance(message, dict) else None
    return properties.get("correlation_id") if properties else None
