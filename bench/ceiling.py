"""The raw ceiling of an HTTP reservation: a bare WSGI function that runs the same SQL
transaction as inventory's reserve (the conditional stock UPDATE, the reservation row,
an outbox row) with plain psycopg, on a database of inventory's schema. No Flask, no
ORM, no validation, no auth. gunicorn serves it with the settings `partsflow web`
uses, so the ratio of the two measures what the framework and the code cost.

    gunicorn 'bench.ceiling:create_app()'
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg

RESERVE = """
UPDATE stock SET reserved = reserved + %(quantity)s
 WHERE warehouse_id = (SELECT id FROM warehouses WHERE code = %(warehouse)s)
   AND part_id = (SELECT id FROM parts WHERE part_number = %(part_number)s)
   AND on_hand >= reserved + %(quantity)s
RETURNING warehouse_id, part_id
"""
INSERT_RESERVATION = """
INSERT INTO reservations (id, job_id, part_id, warehouse_id, quantity, status, priority,
    required_by, owner, site_name, site_region, version, created_at, updated_at)
VALUES (%(id)s, %(job_id)s, %(part_id)s, %(warehouse_id)s, %(quantity)s, 'confirmed',
    %(priority)s, %(required_by)s, %(owner)s, %(site_name)s, %(site_region)s, 1,
    %(now)s, %(now)s)
"""
INSERT_OUTBOX = """
INSERT INTO outbox (message_id, exchange, routing_key, body, correlation_id, created_at, attempts)
VALUES (%(message_id)s, 'events', 'inventory.reservation.confirmed', %(body)s,
    %(message_id)s, %(now)s, 0)
"""

StartResponse = Callable[..., Any]


def create_app() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    # The same setting a gunicorn-served inventory reads; one connection per worker,
    # opened after the fork on the first request.
    conninfo = os.environ["PARTSFLOW_INVENTORY_DB_URL"].replace("+psycopg", "")
    connections: list[psycopg.Connection] = []

    def connection() -> psycopg.Connection:
        if not connections or connections[0].closed:
            connections[:] = [psycopg.connect(conninfo, autocommit=True)]
        return connections[0]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            return _answer(start_response, "200 OK", {"status": "ok"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length))
        now = datetime.now(UTC)
        row = {
            **request,
            "id": str(uuid.uuid4()),
            "site_name": request["site"]["name"],
            "site_region": request["site"]["region"],
            "required_by": datetime.fromisoformat(request["required_by"]),
            "now": now,
        }
        conn = connection()
        try:
            with conn.transaction():
                held = conn.execute(RESERVE, row).fetchone()
                if held is None:
                    return _answer(start_response, "409 Conflict", {"title": "Not enough stock"})
                row["warehouse_id"], row["part_id"] = held
                conn.execute(INSERT_RESERVATION, row)
                resource = {**request, "id": row["id"], "status": "confirmed"}
                conn.execute(
                    INSERT_OUTBOX,
                    {"message_id": str(uuid.uuid4()), "body": json.dumps(resource), "now": now},
                )
        except psycopg.OperationalError:
            conn.close()
            return _answer(start_response, "503 Service Unavailable", {"title": "database"})
        return _answer(start_response, "201 Created", resource)

    return app


def _answer(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]
