"""Field types the services' API schemas share."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

MAX_QUANTITY = 1_000_000


class Text(fields.String):
    """A non-blank string, trimmed, of bounded length."""

    def __init__(self, *, max_length: int = 200, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not text:
            raise self.make_error("invalid")
        return text


class Code(fields.String):
    """An identifier people type: warehouse codes, part numbers."""

    def __init__(self, *, max_length: int = 32, **kwargs: Any) -> None:
        super().__init__(
            validate=[
                validate.Length(min=1, max=max_length),
                validate.Regexp(
                    r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
                    error="use letters, digits and . _ / - only",
                ),
            ],
            **kwargs,
        )


class Quantity(fields.Integer):
    """A positive whole number (a string or a float is refused)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY), **kwargs)


def strict_bool(**kwargs: Any) -> fields.Boolean:
    return fields.Boolean(truthy={True}, falsy={False}, **kwargs)
