"""What the current request or message is, so that every event it causes carries
its correlation id, and a consumed message is recorded in the inbox of the very
transaction that applies it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


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
