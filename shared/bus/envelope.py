"""CloudEvents 1.0 structured JSON envelopes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.json_input import UnkeepableText, is_keepable, read_json

CONTENT_TYPE = "application/cloudevents+json"
REQUIRED = ("specversion", "id", "source", "type")
# The inbox's and outbox's key: a longer id (or correlation id) could not be kept.
MAX_ID_LENGTH = 64
# A sender's source is kept as who did what (a reservation's history, a scan's source).
MAX_SOURCE_LENGTH = 200


class MalformedMessage(ValueError):
    """The body is not a CloudEvents envelope we can read; it can never succeed."""

    def __init__(self, reason: str, *, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


def new_id() -> str:
    return str(uuid.uuid4())


def make_envelope(
    type: str,
    *,
    source: str,
    data: Mapping[str, Any],
    subject: str | None = None,
    correlationid: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> dict[str, Any]:
    message_id = id or new_id()
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": message_id,
        "source": source,
        "type": type,
        "time": (time or datetime.now(UTC)).isoformat(),
        "datacontenttype": "application/json",
        "correlationid": correlationid or message_id,
        "data": dict(data),
    }
    if subject is not None:
        envelope["subject"] = str(subject)
    return envelope


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def encode(envelope: Mapping[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"), default=_json_default)


def decode(body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check an envelope; raise :class:`MalformedMessage` when it is not one."""
    if isinstance(body, Mapping):
        envelope = dict(body)
    else:
        try:
            envelope = read_json(body)
        except UnkeepableText as exc:
            # Still an envelope whose sender can be told, when its id is usable.
            named = exc.value.get("id") if isinstance(exc.value, dict) else None
            raise MalformedMessage(
                "a string in the body holds NUL or half a surrogate pair",
                message_id=usable_id(named),
            ) from None
        except ValueError as exc:
            raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage("body is not a JSON object")
    message_id = usable_id(envelope.get("id"))
    missing = [
        name
        for name in REQUIRED
        if not (isinstance(envelope.get(name), str) and envelope[name].strip())
    ]
    if missing:
        raise MalformedMessage(f"envelope lacks {', '.join(missing)}", message_id=message_id)
    if message_id is None:
        raise MalformedMessage(f"id is longer than {MAX_ID_LENGTH} characters")
    if len(envelope["source"]) > MAX_SOURCE_LENGTH:
        raise MalformedMessage(
            f"source is longer than {MAX_SOURCE_LENGTH} characters", message_id=message_id
        )
    if envelope["specversion"] != "1.0":
        raise MalformedMessage("specversion must be 1.0", message_id=message_id)
    if not isinstance(envelope.get("data", {}), dict):
        raise MalformedMessage("data must be a JSON object", message_id=message_id)
    if envelope.get("datacontenttype", "application/json") != "application/json":
        raise MalformedMessage("datacontenttype must be application/json", message_id=message_id)
    if "correlationid" in envelope and usable_id(envelope["correlationid"]) is None:
        raise MalformedMessage(
            f"correlationid must be text of at most {MAX_ID_LENGTH} characters",
            message_id=message_id,
        )
    if "time" in envelope and not _has_offset(envelope["time"]):
        raise MalformedMessage(
            "time must be an ISO 8601 time with its UTC offset", message_id=message_id
        )
    envelope.setdefault("data", {})
    envelope.setdefault("correlationid", envelope["id"])
    return envelope


def usable_id(value: Any) -> str | None:
    """An id the inbox can keep and a reply can name: text, not blank, not too long."""
    if (
        isinstance(value, str)
        and value.strip()
        and len(value) <= MAX_ID_LENGTH
        and is_keepable(value)
    ):
        return value
    return None


def _has_offset(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
