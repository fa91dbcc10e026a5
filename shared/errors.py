"""Domain errors every service raises; the web layer renders them as problem+json
(RFC 9457) and the bus layer as ``*.rejected`` events. No Flask here."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(DomainError):
    """The action does not fit the current state (not enough stock, wrong status)."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


class InvalidInput(DomainError):
    """Well-formed input that breaks a rule; ``errors`` maps fields to messages."""

    status = 422
    title = "Unprocessable content"
    type_slug = "validation-error"

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None, **extra: Any):
        super().__init__(detail, **extra)
        self.errors = errors or {}
