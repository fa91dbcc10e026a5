"""What the current request or message is, so that every event it causes carries
its correlation id, and a consumed message is recorded in the inbox of the very
transaction that applies it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from shared.errors import NotFound

_T = TypeVar("_T")

# How often a request waiting for news looks in its own database.
NEWS_POLL_SECONDS = 0.05


@dataclass
class MessageContext:
    correlation_id: str
    # Set when a consumed message is being handled: its id goes into the inbox.
    inbox_message_id: str | None = None
    inbox_message_type: str | None = None
    reply_to: str | None = None
    inbox_recorded: bool = False
    # The consumer can still hand the message over again a moment later (see
    # :class:`NewsOnItsWay`): a handler missing what another queue may bring waits.
    can_wait_for_news: bool = False


current_message: ContextVar[MessageContext | None] = ContextVar("current_message", default=None)


@contextmanager
def message_context(context: MessageContext) -> Iterator[MessageContext]:
    token = current_message.set(context)
    try:
        yield context
    finally:
        current_message.reset(token)


def current_correlation_id() -> str | None:
    context = current_message.get()
    return context.correlation_id if context else None


def handled_message_id() -> str | None:
    """The id of the consumed message being applied, which the inbox keeps once."""
    context = current_message.get()
    return context.inbox_message_id if context else None


class NewsOnItsWay(Exception):
    """Raised by a handler whose message names something this service has not heard
    of yet but may be about to (its event is on another queue): while
    ``can_wait_for_news`` the consumer hands the message over again a moment later;
    once it no longer can, the handler answers for itself."""


def can_wait_for_news() -> bool:
    context = current_message.get()
    return bool(context and context.can_wait_for_news)


def once_heard_of(work: Callable[[], _T], heard: Callable[[], bool], grace_seconds: float) -> _T:
    """``work``; if it finds something unknown (NotFound), again once ``heard()`` says
    the news has arrived, waiting ``grace_seconds`` at most: something another service
    has just created is still on its way over the bus to this one. Real time, not a
    service's clock: this is about messages in flight, not about the domain."""
    try:
        return work()
    except NotFound:
        deadline = time.monotonic() + grace_seconds
        while True:
            if time.monotonic() >= deadline:
                raise
            time.sleep(NEWS_POLL_SECONDS)
            if heard():
                break
    return work()
