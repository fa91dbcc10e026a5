"""JSON that arrives from outside (request bodies, message bodies): read, or refused
with a ``ValueError`` (``json.JSONDecodeError``), never an error of another kind."""

from __future__ import annotations

import json
import re
from typing import Any

# Valid JSON escapes of what no database or UTF-8 message can hold: a lone half of a
# surrogate pair (\uD800-\uDFFF), or NUL (\u0000), which PostgreSQL's text refuses.
_UNKEEPABLE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


class UnkeepableText(json.JSONDecodeError):
    """Valid JSON holding text that cannot be kept; ``value`` is what it reads as, for
    a caller that can still say which message it was (its id)."""

    def __init__(self, text: str, value: Any) -> None:
        super().__init__("a string holds NUL or half a surrogate pair", text, 0)
        self.value = value


def read_json(raw: bytes | str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise json.JSONDecodeError("not UTF-8", "", 0) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as exc:  # a number too long to convert, say
        raise json.JSONDecodeError(str(exc), text, 0) from None
    if _UNKEEPABLE_ESCAPE.search(text) and not _all_text(value):
        raise UnkeepableText(text, value)
    return value


def is_keepable(text: str) -> bool:
    """Text a database and a UTF-8 message can hold."""
    return _all_text(text)


def _all_text(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
