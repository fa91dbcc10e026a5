from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.auth import User, UserError, UserExists, UserStore, parse_bearer
from shared.bus.envelope import MalformedMessage, decode, encode, make_envelope


class TestEnvelope:
    def test_round_trip_keeps_cloudevents_fields(self) -> None:
        envelope = make_envelope(
            "inventory.reservation.confirmed",
            source="partsflow/inventory",
            subject="r-1",
            data={"at": datetime(2026, 11, 22, 8, tzinfo=UTC)},
            correlationid="c-1",
        )
        decoded = decode(encode(envelope))
        assert decoded["specversion"] == "1.0"
        assert decoded["correlationid"] == "c-1"
        assert decoded["data"]["at"] == "2026-11-22T08:00:00+00:00"

    def test_correlation_defaults_to_own_id(self) -> None:
        envelope = make_envelope("x.y", source="s", data={})
        assert envelope["correlationid"] == envelope["id"]

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[1]",
            json.dumps({"id": "x"}).encode(),
            json.dumps({"specversion": "0.3", "id": "x", "source": "s", "type": "t"}).encode(),
            json.dumps(
                {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": [1]}
            ).encode(),
            b"\xff\xfe",
        ],
    )
    def test_malformed_bodies_are_named(self, body: bytes) -> None:
        with pytest.raises(MalformedMessage):
            decode(body)

    @pytest.mark.parametrize("message_id", ["", "   ", "x" * 65, 7, "cmd\x00", "cmd\ud800"])
    def test_an_id_nobody_could_answer_or_record_is_no_id(self, message_id: object) -> None:
        body = {"specversion": "1.0", "id": message_id, "source": "s", "type": "t", "data": {}}
        with pytest.raises(MalformedMessage) as error:
            decode(json.dumps(body))
        assert error.value.message_id is None

    @pytest.mark.parametrize(
        "changes",
        [
            {"time": "2026-11-24T08:00:00"},
            {"time": "yesterday"},
            {"time": 1732435200},
            {"datacontenttype": "text/plain"},
            {"correlationid": ""},
            {"correlationid": "c" * 65},
            {"source": "s" * 201},
        ],
    )
    def test_envelope_fields_are_checked(self, changes: dict) -> None:
        body = {"specversion": "1.0", "id": "cmd-8", "source": "s", "type": "t", "data": {}}
        with pytest.raises(MalformedMessage) as error:
            decode(json.dumps({**body, **changes}))
        assert error.value.message_id == "cmd-8"

    def test_time_with_its_offset_is_taken(self) -> None:
        body = {"specversion": "1.0", "id": "cmd-9", "source": "s", "type": "t"}
        assert decode(json.dumps({**body, "time": "2026-11-24T08:00:00+01:00"}))["id"] == "cmd-9"
        assert decode(json.dumps(body))["data"] == {}
        assert decode(json.dumps({**body, "source": "s" * 200}))["source"] == "s" * 200

    def test_malformed_envelope_keeps_its_id_when_it_has_one(self) -> None:
        with pytest.raises(MalformedMessage) as error:
            decode(json.dumps({"id": "cmd-7", "type": "inventory.reserve"}))
        assert error.value.message_id == "cmd-7"

    @pytest.mark.parametrize("text", ["li\x00wei", "li\udc00wei"])
    def test_unkeepable_text_in_the_data_keeps_the_id_to_answer(self, text: str) -> None:
        """Its sender waits for an answer: the id is read though the data cannot be."""
        body = {"specversion": "1.0", "id": "cmd-6", "source": "s", "type": "t"}
        with pytest.raises(MalformedMessage) as error:
            decode(json.dumps({**body, "data": {"owner": text}}))
        assert error.value.message_id == "cmd-6"
        assert "NUL" in error.value.reason


class TestUserStore:
    def test_token_is_shown_once_and_stored_hashed(self, tmp_path: Path) -> None:
        store = UserStore(tmp_path / "users.json")
        token = store.add("li", "engineer")
        assert store.by_token(token) == User("li", "engineer")
        assert token not in (tmp_path / "users.json").read_text()
        assert store.by_token(token + "x") is None

    def test_password_login(self, tmp_path: Path) -> None:
        store = UserStore(tmp_path / "users.json")
        store.add("ana", "logistics", "correct horse")
        assert store.by_password("ana", "correct horse") == User("ana", "logistics")
        assert store.by_password("ana", "wrong horse!") is None
        assert store.by_password("nobody", "correct horse") is None

    def test_changes_by_another_process_are_seen(self, tmp_path: Path) -> None:
        path = tmp_path / "users.json"
        reader = UserStore(path)
        assert reader.names() == []
        token = UserStore(path).add("late", "viewer")
        assert reader.by_token(token) == User("late", "viewer")

    def test_adding_a_name_that_exists_with_another_role_changes_nothing(
        self, tmp_path: Path
    ) -> None:
        store = UserStore(tmp_path / "users.json")
        token = store.add("ana", "viewer", "first password")
        before = (tmp_path / "users.json").read_bytes()
        with pytest.raises(UserExists, match="ana already exists, with role viewer"):
            store.add("ana", "admin", "second password")
        assert (tmp_path / "users.json").read_bytes() == before
        assert store.by_token(token) == User("ana", "viewer")
        assert store.by_password("ana", "second password") is None

    def test_adding_a_name_that_exists_with_its_role_gives_another_token(
        self, tmp_path: Path
    ) -> None:
        store = UserStore(tmp_path / "users.json")
        first = store.add("ana", "viewer")
        second = store.add("ana", "viewer", "a new password")
        assert store.by_token(first) == store.by_token(second) == User("ana", "viewer")
        assert store.by_password("ana", "a new password") == User("ana", "viewer")

    def test_bad_role_and_short_password(self, tmp_path: Path) -> None:
        store = UserStore(tmp_path / "users.json")
        with pytest.raises(UserError):
            store.add("x", "root")
        with pytest.raises(UserError):
            store.add("x", "viewer", "short")

    def test_roles_grant_what_the_contract_says(self) -> None:
        assert User("a", "engineer").can("acknowledge_alerts")
        assert not User("a", "engineer").can("reserve")
        assert User("a", "service").can("reserve")
        assert User("a", "service").can("record_events")
        assert not User("a", "service").can("manage_stock")
        assert not User("a", "viewer").can("acknowledge_alerts")

    def test_bearer_parsing(self) -> None:
        assert parse_bearer("Bearer abc") == "abc"
        assert parse_bearer("bearer  abc ") == "abc"
        assert parse_bearer("Basic abc") is None
        assert parse_bearer("Bearer ") is None
        assert parse_bearer(None) is None
