"""What every API call gets right whatever the resource: auth, errors, limits,
idempotency, probes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server

from tests.processes import free_port
from tests.support import ApiClient, reservation_body, seed_catalogue

V1 = "/inventory/api/v1"
MIB = 1024 * 1024


@pytest.fixture
def api(inventory) -> ApiClient:
    client = inventory.api("logistics")
    seed_catalogue(client)
    client.post(f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 50})
    return client


@pytest.fixture
def served(inventory) -> Iterator[str]:
    """The inventory app behind werkzeug's server, as `partsflow run` serves it: a
    real connection, so a body can come in chunks."""
    server = make_server("127.0.0.1", free_port(), inventory.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join(timeout=10)


def in_chunks(body: bytes) -> Iterator[bytes]:
    """A body of unknown length: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


class TestAuth:
    def test_no_token_is_401_problem(self, api: ApiClient) -> None:
        reply = api.as_user(None).get(f"{V1}/stock")
        assert reply.status == 401
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")

    def test_unknown_token_is_401(self, api: ApiClient) -> None:
        assert api.as_user("pf_forged").get(f"{V1}/stock").status == 401

    @pytest.mark.parametrize("role", ["viewer", "engineer"])
    def test_read_only_roles_may_read_but_not_reserve(self, inventory, api, role) -> None:
        user = inventory.api(role)
        assert user.get(f"{V1}/stock").status == 200
        reply = user.post(f"{V1}/reservations", reservation_body(part_number="GEL-250"))
        assert reply.status == 403
        assert reply.headers["Content-Type"] == "application/problem+json"

    def test_service_role_may_reserve_but_not_receive(self, inventory, api) -> None:
        machine = inventory.api("service")
        assert (
            machine.post(f"{V1}/reservations", reservation_body(part_number="GEL-250")).status
            == 201
        )
        reply = machine.post(
            f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 1}
        )
        assert reply.status == 403

    def test_forbidden_request_changes_nothing(self, inventory, api) -> None:
        inventory.api("viewer").post(
            f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 9}
        )
        assert api.get(f"{V1}/stock", part_number="GEL-250").body[0]["on_hand"] == 50

    def test_session_cookie_alone_does_not_open_the_api(self, inventory, api) -> None:
        client = inventory.app.test_client()
        client.set_cookie("partsflow_session", "anything", domain="localhost")
        assert client.get(f"{V1}/stock").status_code == 401


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"quantity": 0}, "quantity"),
            ({"quantity": -2}, "quantity"),
            ({"quantity": "1"}, "quantity"),
            ({"quantity": 1.5}, "quantity"),
            ({"required_by": "2026-12-01T08:00:00"}, "required_by"),
            ({"required_by": "tomorrow"}, "required_by"),
            ({"priority": "whenever"}, "priority"),
            ({"site": {"name": "x"}}, "site"),
            ({"job_id": ""}, "job_id"),
            ({"job_id": "   "}, "job_id"),
            ({"status": "fulfilled"}, "status"),
            ({"id": "mine"}, "id"),
            # Valid ISO 8601 whose UTC time falls off the calendar, or no delivery's.
            ({"required_by": "9999-12-31T23:59:59-01:00"}, "required_by"),
            ({"required_by": "0001-01-01T00:00:00+01:00"}, "required_by"),
            ({"required_by": "1900-01-01T00:00:00+00:00"}, "required_by"),
            ({"job_id": "J\ud800"}, "_body"),
            ({"owner": "li.wei\x00"}, "_body"),
        ],
    )
    def test_reservation_field_errors(self, api: ApiClient, change, field) -> None:
        reply = api.post(f"{V1}/reservations", reservation_body(part_number="GEL-250", **change))
        assert reply.status == 422, reply
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert field in reply.body["errors"]

    def test_times_are_answered_in_utc(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/reservations",
            reservation_body(part_number="GEL-250", required_by="2030-01-01T08:00:00+08:00"),
        )
        assert reply.status == 201, reply
        assert reply.body["required_by"] == "2030-01-01T00:00:00+00:00"
        assert (
            api.get(f"{V1}/reservations/{reply.body['id']}").body["required_by"]
            == (reply.body["required_by"])
        )

    def test_nul_in_a_query_is_422_and_in_a_path_404(self, api: ApiClient) -> None:
        for params in ({"job_id": "JOB\x00"}, {"status": "confirmed\x00"}):
            reply = api.get(f"{V1}/reservations", **params)
            assert reply.status == 422
            assert set(reply.body["errors"]) == set(params)
        assert api.get(f"{V1}/reservations/abc%00").status == 404
        assert api.get(f"{V1}/parts/GEL-250%00").status == 404

    def test_a_time_off_the_calendar_in_a_query_is_422(self, api: ApiClient) -> None:
        reply = api.get(f"{V1}/movements", since="9999-12-31T23:59:59-01:00")
        assert reply.status == 422
        assert "since" in reply.body["errors"]

    def test_a_flag_is_true_or_false_only(self, api: ApiClient) -> None:
        for flag in (1, 0, "true"):
            reply = api.post(
                f"{V1}/parts", {"part_number": "FLAG-1", "description": "x", "serialized": flag}
            )
            assert reply.status == 422, (flag, reply)
            assert "serialized" in reply.body["errors"]

    def test_text_longer_than_documented_is_422_even_if_trimming_would_shorten_it(
        self, api: ApiClient
    ) -> None:
        description = "\v" + "x" * 500
        reply = api.post(
            f"{V1}/parts",
            {"part_number": "LONG-1", "description": description, "serialized": False},
        )
        assert reply.status == 422, reply
        assert reply.body["errors"]["description"] == ["Longer than maximum length 500."]
        assert api.get(f"{V1}/parts/LONG-1").status == 404

    def test_errors_inside_a_field_say_where_in_plain_words(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/reservations", reservation_body(part_number="GEL-250", site={"name": 7})
        )
        assert reply.status == 422, reply
        assert sorted(reply.body["errors"]["site"]) == [
            "name: Not a valid string.",
            "region: Missing data for required field.",
        ]

    def test_missing_fields_are_each_named(self, api: ApiClient) -> None:
        reply = api.post(f"{V1}/reservations", {})
        assert reply.status == 422
        assert {
            "job_id",
            "part_number",
            "quantity",
            "required_by",
            "priority",
            "owner",
            "site",
        } <= set(reply.body["errors"])

    def test_server_owned_fields_are_refused(self, api: ApiClient) -> None:
        reply = api.post(
            f"{V1}/receipts",
            {
                "warehouse": "CDU",
                "part_number": "GEL-250",
                "quantity": 1,
                "reserved": 0,
                "available": 99,
            },
        )
        assert reply.status == 422
        assert {"reserved", "available"} <= set(reply.body["errors"])
        assert api.get(f"{V1}/stock", part_number="GEL-250").body[0]["on_hand"] == 50

    def test_body_that_is_not_json_is_415(self, api: ApiClient) -> None:
        reply = api.post(f"{V1}/warehouses", data="code=X", content_type="text/plain")
        assert reply.status == 415
        assert reply.headers["Content-Type"] == "application/problem+json"

    def test_broken_json_is_422(self, api: ApiClient) -> None:
        reply = api.post(f"{V1}/warehouses", data="{not json", content_type="application/json")
        assert reply.status == 422
        assert reply.headers["Content-Type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "body",
        [
            "[" * 100_000 + "]" * 100_000,
            '{"warehouse": "CDU", "part_number": "GEL-250", "quantity": 1, '
            '"reference": "x\\udfffy"}',
            '{"warehouse": "CDU", "part_number": "GEL-250", "quantity": 1' + "0" * 5000 + "}",
            b'{"warehouse": "CDU", "part_number": "GEL-250", "quantity": 1, "reference": "\xff"}',
        ],
        ids=["nested too deeply", "lone surrogate", "number too long to read", "not UTF-8"],
    )
    def test_json_no_service_can_keep_is_422(self, api: ApiClient, body: str | bytes) -> None:
        for headers in ({}, {"Idempotency-Key": "odd-body"}):
            reply = api.post(
                f"{V1}/receipts", data=body, content_type="application/json", headers=headers
            )
            assert reply.status == 422, reply
            assert reply.headers["Content-Type"] == "application/problem+json"
        assert api.get(f"{V1}/stock", part_number="GEL-250").body[0]["on_hand"] == 50

    def test_json_array_body_is_422(self, api: ApiClient) -> None:
        reply = api.post(f"{V1}/warehouses", data="[1, 2]", content_type="application/json")
        assert reply.status == 422

    def test_huge_body_is_413(self, api: ApiClient) -> None:
        big = json.dumps({"code": "X", "name": "x" * (2 * 1024 * 1024)})
        reply = api.post(f"{V1}/warehouses", data=big, content_type="application/json")
        assert reply.status == 413
        assert reply.headers["Content-Type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "padding",
        [3_000_000, MIB],
        ids=["3 MB, its first MiB a whole part", "a little over 1 MiB"],
    )
    def test_chunked_body_over_the_limit_is_413(self, api, served, padding: int) -> None:
        part = json.dumps({"part_number": "BIG-1", "description": "x", "serialized": False})
        body = part.encode() + b" " * padding
        reply = requests.post(
            served + f"{V1}/parts",
            data=in_chunks(body),
            headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert reply.status_code == 413
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert api.get(f"{V1}/parts/BIG-1").status == 404

    def test_chunked_body_within_the_limit_is_taken(self, api, served) -> None:
        part = json.dumps({"part_number": "CHUNKED-1", "description": "x", "serialized": False})
        body = part.encode() + b" " * (MIB - len(part))
        reply = requests.post(
            served + f"{V1}/parts",
            data=in_chunks(body),
            headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert reply.status_code == 201, reply.text
        assert api.get(f"{V1}/parts/CHUNKED-1").status == 200

    def test_chunked_form_over_the_limit_is_413(self, api, served) -> None:
        form = b"code=BIG&name=" + b"x" * (2 * MIB)
        reply = requests.post(
            served + "/inventory/warehouses",
            data=in_chunks(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        assert reply.status_code == 413

    def test_unknown_path_and_wrong_method_are_problems(self, api: ApiClient) -> None:
        assert api.get(f"{V1}/nothing-here").status == 404
        reply = api.client.delete(f"{V1}/stock", headers={"Authorization": f"Bearer {api.token}"})
        assert reply.status_code == 405
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert set(reply.headers["Allow"].split(", ")) >= {"GET"}

    def test_page_size_is_capped(self, api: ApiClient) -> None:
        assert api.get(f"{V1}/stock", page_size=1001).status == 422
        assert api.get(f"{V1}/stock", page_size=1000).status == 200
        reply = api.get(f"{V1}/stock", page_size=1, page=1)
        assert reply.status == 200
        assert json.loads(reply.headers["X-Pagination"])["page"] == 1

    def test_every_page_says_which_it_is_even_past_the_end(self, api: ApiClient) -> None:
        empty = api.get(f"{V1}/stock", part_number="NO-SUCH-PART")
        assert json.loads(empty.headers["X-Pagination"]) == {
            "total": 0,
            "total_pages": 0,
            "page": 1,
        }
        past = json.loads(api.get(f"{V1}/stock", page=99).headers["X-Pagination"])
        assert past["page"] == 99
        assert "next_page" not in past

    def test_default_page_holds_100(self, api: ApiClient) -> None:
        api.post(f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 60})
        for i in range(105):
            reply = api.post(
                f"{V1}/reservations", reservation_body(job_id=f"P{i}", part_number="GEL-250")
            )
            assert reply.status == 201
        reply = api.get(f"{V1}/reservations")
        pagination = json.loads(reply.headers["X-Pagination"])
        assert len(reply.body) == 100
        assert pagination["total"] == 105
        assert pagination["next_page"] == 2


class TestIdsThatNameAPage:
    """Part numbers, warehouse codes and job ids become page addresses: none may hold
    a part a browser would take for another page's address ('.', '..', '//')."""

    @pytest.mark.parametrize(
        "number", ["PX/../../warehouses", "PY/./z", "W/..", "A//b", "CDU/", "GEL\n"]
    )
    def test_a_part_number_with_a_dot_segment_is_refused(self, api: ApiClient, number) -> None:
        reply = api.post(
            f"{V1}/parts", {"part_number": number, "description": "x", "serialized": False}
        )
        assert reply.status == 422, reply
        assert "part_number" in reply.body["errors"]

    @pytest.mark.parametrize(
        "job_id", ["../../inventory/movements", "JOB/./1", "..", "a/..", "a//b", "job/", "/job"]
    )
    def test_a_job_id_with_a_dot_segment_is_refused(self, api: ApiClient, job_id) -> None:
        reply = api.post(f"{V1}/reservations", reservation_body(job_id=job_id))
        assert reply.status == 422, reply
        assert "job_id" in reply.body["errors"]
        assert api.get(f"{V1}/reservations").body == []

    def test_slashes_and_dots_inside_a_part_are_kept(self, api: ApiClient) -> None:
        part = {"part_number": "5141/A.2", "description": "x", "serialized": False}
        assert api.post(f"{V1}/parts", part).status == 201
        body = reservation_body(job_id="WO#12/3.4..5", part_number="GEL-250")
        reply = api.post(f"{V1}/reservations", body)
        assert reply.status == 201, reply
        assert reply.body["job_id"] == "WO#12/3.4..5"


class TestIdempotencyKey:
    def test_replay_returns_the_first_answer_and_changes_nothing(self, api: ApiClient) -> None:
        body = reservation_body(part_number="GEL-250", quantity=5)
        first = api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "k-1"})
        second = api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "k-1"})
        assert first.status == second.status == 201
        assert first.body == second.body
        assert second.headers.get("Idempotent-Replayed") == "true"
        # The events the first caused carry its request id: the replay names it too.
        assert second.headers["X-Request-ID"] == first.headers["X-Request-ID"]
        stock = api.get(f"{V1}/stock", part_number="GEL-250").body[0]
        assert stock["reserved"] == 5
        assert len(api.get(f"{V1}/reservations").body) == 1
        other = api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "k-2"})
        assert other.headers["X-Request-ID"] != first.headers["X-Request-ID"]

    def test_the_same_json_spaced_or_ordered_otherwise_is_a_replay(self, api: ApiClient) -> None:
        body = reservation_body(part_number="GEL-250", quantity=2)
        compact = json.dumps(body, separators=(",", ":"))
        reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
        headers = {"Idempotency-Key": "k-4"}
        first = api.post(
            f"{V1}/reservations", data=compact, content_type="application/json", headers=headers
        )
        again = api.post(
            f"{V1}/reservations", data=reordered, content_type="application/json", headers=headers
        )
        assert (first.status, again.status) == (201, 201)
        assert again.body["id"] == first.body["id"]
        assert api.get(f"{V1}/stock", part_number="GEL-250").body[0]["reserved"] == 2

    def test_same_key_with_another_body_is_422(self, api: ApiClient) -> None:
        api.post(
            f"{V1}/reservations",
            reservation_body(part_number="GEL-250"),
            headers={"Idempotency-Key": "k-2"},
        )
        reply = api.post(
            f"{V1}/reservations",
            reservation_body(part_number="GEL-250", quantity=2),
            headers={"Idempotency-Key": "k-2"},
        )
        assert reply.status == 422
        # The one problem every 422 of the API is.
        invalid = api.post(f"{V1}/reservations", {})
        assert (reply.body["type"], reply.body["title"]) == (
            invalid.body["type"],
            invalid.body["title"],
        )

    def test_a_refusal_is_replayed_too(self, api: ApiClient) -> None:
        body = reservation_body(part_number="GEL-250", quantity=500)
        first = api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "k-3"})
        api.post(f"{V1}/receipts", {"warehouse": "CDU", "part_number": "GEL-250", "quantity": 500})
        second = api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "k-3"})
        assert first.status == second.status == 409
        assert first.body == second.body

    def test_keys_belong_to_their_user(self, inventory, api: ApiClient) -> None:
        body = reservation_body(part_number="GEL-250")
        api.post(f"{V1}/reservations", body, headers={"Idempotency-Key": "shared"})
        other = inventory.api("admin").post(
            f"{V1}/reservations", body, headers={"Idempotency-Key": "shared"}
        )
        assert other.status == 201
        assert other.headers.get("Idempotent-Replayed") is None


class TestProbes:
    def test_health_ready_metrics(self, inventory, api: ApiClient) -> None:
        client = inventory.app.test_client()
        assert client.get("/inventory/healthz").get_json()["status"] == "ok"
        ready = client.get("/inventory/readyz")
        assert ready.status_code == 200
        assert ready.get_json()["checks"]["database"] == "ok"
        metrics = client.get("/inventory/metrics").get_data(as_text=True)
        assert "partsflow_http_requests_total" in metrics
        assert "partsflow_outbox_unsent" in metrics

    def test_made_up_methods_share_one_label(self, inventory) -> None:
        client = inventory.app.test_client()
        for n in range(20):
            client.open("/inventory/api/v1/parts", method=f"FROB{n}")
        metrics = client.get("/inventory/metrics").get_data(as_text=True)
        assert "FROB" not in metrics
        assert 'method="other"' in metrics

    def test_every_request_but_the_probes_is_logged_once(
        self, inventory, api: ApiClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = inventory.app.test_client()
        with caplog.at_level("INFO", logger="partsflow.web"):
            client.get("/inventory/healthz")
            client.get("/inventory/metrics")
            page = client.get("/inventory/stock")
            reply = api.get(f"{V1}/stock")
        logged = [
            (r.method, r.path, r.status)  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage() == "request"
        ]
        assert logged == [
            ("GET", "/inventory/stock", page.status_code),
            ("GET", f"{V1}/stock", reply.status),
        ]

    @pytest.mark.parametrize("probe", ["healthz", "readyz", "metrics"])
    def test_probes_answer_other_methods_with_405(self, inventory, probe: str) -> None:
        reply = inventory.app.test_client().post(f"/inventory/{probe}")
        assert reply.status_code == 405
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert "GET" in reply.headers["Allow"]

    def test_openapi_document_lists_the_contract_paths(self, inventory) -> None:
        spec = inventory.app.test_client().get("/inventory/api/openapi.json").get_json()
        paths = set(spec["paths"])
        assert {
            "/inventory/api/v1/warehouses",
            "/inventory/api/v1/parts",
            "/inventory/api/v1/parts/{part_number}",
            "/inventory/api/v1/receipts",
            "/inventory/api/v1/adjustments",
            "/inventory/api/v1/stock",
            "/inventory/api/v1/reservations",
            "/inventory/api/v1/reservations/{reservation_id}",
            "/inventory/api/v1/reservations/{reservation_id}/release",
            "/inventory/api/v1/movements",
            "/inventory/api/v1/units/{serial}",
        } <= paths
