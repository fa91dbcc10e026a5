"""JSON that arrives from outside (request bodies, message bodies): read, or refused
with a ``ValueError`` (``json.JSONDecodeError``), never an error of another kind."""

from __future__ import annotations

import json
import re
from typing import Any

# A \uD800-\uDFFF escape: valid JSON, but alone (not half of a pair) it is no text
# that a database or a UTF-8 message can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def read_json(raw: bytes | str) -> Any:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    if _SURROGATE_ESCAPE.search(text) and not _all_text(value):
        raise json.JSONDecodeError("a string holds a lone surrogate escape", text, 0)
    return value


def _all_text(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
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
