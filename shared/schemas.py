"""Field types the services' API schemas share."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate

MAX_QUANTITY = 1_000_000
# The times Partsflow takes: wide enough for any delivery, narrow enough that every
# sum the services make with a time (deadlines, estimates, ranges) stays a time.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(3000, 1, 1, tzinfo=UTC)


class Text(fields.String):
    """A non-blank string, trimmed, of bounded length."""

    default_error_messages = {"too_long": "Longer than maximum length {max}."}

    def __init__(self, *, max_length: int = 200, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        sent = super()._deserialize(value, attr, data, **kwargs)
        # The documented maxLength bounds what is sent, not what is left after trimming.
        if len(sent) > self.max_length:
            raise self.make_error("too_long", max=self.max_length)
        text = sent.strip()
        if not text or "\x00" in text:  # NUL: no database's text holds it
            raise self.make_error("invalid")
        return text


class Code(fields.String):
    """An identifier people type: warehouse codes, part numbers. It names a page (its
    slashes stay slashes there), so no part of it between slashes may be empty, ``.``
    or ``..``: a browser would take those for another page's address."""

    def __init__(self, *, max_length: int = 32, **kwargs: Any) -> None:
        super().__init__(
            validate=[
                validate.Length(min=1, max=max_length),
                validate.Regexp(
                    r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
                    error="use letters, digits and . _ / - only",
                ),
                _whole_code,
                _names_a_page,
            ],
            **kwargs,
        )


class JobId(Text):
    """A job's id as the field-service system writes it (any text), but naming a page
    too: no part of it between slashes may be empty, ``.`` or ``..``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=100, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        _names_a_page(text)
        return text


_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def _whole_code(value: str) -> None:
    # The documented pattern's "$" lets a final line break by; the whole must match.
    if not _CODE.fullmatch(value):
        raise ValidationError("use letters, digits and . _ / - only")


def _names_a_page(value: str) -> None:
    """Refuse what a browser would not keep as one page's address: an empty, ``.`` or
    ``..`` part between slashes."""
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValidationError("no part between slashes may be empty, '.' or '..'")


class Quantity(fields.Integer):
    """A positive whole number (a string or a float is refused)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY), **kwargs)


class Instant(fields.AwareDateTime):
    """A moment in ISO 8601 with its UTC offset (one without is refused), taken in
    UTC, so every answer and event tells it the same way."""

    default_error_messages = {
        "out_of_range": "give a time between 1970 and 2999",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time
            raise self.make_error("out_of_range") from None
        if not EARLIEST_TIME <= moment < LATEST_TIME:
            raise self.make_error("out_of_range")
        return moment


class StrictBoolean(fields.Boolean):
    """``true`` or ``false`` only: 1, 0 and strings are refused (a flag that cannot
    be changed later should not be set by accident)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def strict_bool(**kwargs: Any) -> fields.Boolean:
    return StrictBoolean(**kwargs)
