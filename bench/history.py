"""Lane history for tracking, loaded in bulk: delivered shipments, their delivery scans
and their transit times, written with COPY straight into tracking's tables (the API
would take an hour for 100,000 of them)."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from shared.contracts import name_key

Lane = tuple[str, str, str, str, str]  # origin warehouse, its region, destination, mode, carrier

SHIPMENTS = (
    "id",
    "version",
    "status",
    "origin",
    "origin_region",
    "destination_site",
    "destination_region",
    "mode",
    "carrier",
    "tracking_number",
    "promised_delivery_at",
    "dispatched_at",
    "delivered_at",
    "last_event_id",
    "last_event_at",
    "first_seen_at",
    "updated_at",
)
EVENTS = (
    "id",
    "shipment_id",
    "kind",
    "occurred_at",
    "carrier",
    "tracking_number",
    "source",
    "recorded_at",
)
TRANSITS = (
    "shipment_id",
    "origin_region",
    "destination_region",
    "mode",
    "carrier",
    "hours",
    "promised_hours",
    "midway_delay_hours",
    "final_delay_hours",
    "delivered_at",
)


def load(conn: psycopg.Connection, lanes: Sequence[Lane], count: int, seed: int = 8) -> None:
    """``count`` delivered shipments spread over ``lanes`` and the last two years."""
    chooser = random.Random(seed)
    now = datetime.now(UTC)
    shipments, events, transits = [], [], []
    for i in range(count):
        origin, origin_region, destination, mode, carrier = lanes[i % len(lanes)]
        # Each lane has its own typical transit; real transits scatter around it.
        typical = 12 + 6 * (i % len(lanes))
        hours = typical * math.exp(chooser.gauss(0, 0.25))
        delivered = now - timedelta(hours=chooser.uniform(24, 2 * 365 * 24))
        dispatched = delivered - timedelta(hours=hours)
        promised = dispatched + timedelta(hours=typical)
        final_delay = hours - typical
        shipment_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        tracking_number = f"H{i:08d}"
        shipments.append(
            (
                shipment_id,
                4,
                "delivered",
                origin,
                origin_region,
                "History county hospital",
                destination,
                mode,
                carrier,
                tracking_number,
                promised,
                dispatched,
                delivered,
                event_id,
                delivered,
                dispatched,
                delivered,
            )
        )
        events.append(
            (
                event_id,
                shipment_id,
                "delivered",
                delivered,
                carrier,
                tracking_number,
                "bench-history",
                delivered,
            )
        )
        # Tracking keeps a lane by its names' key.
        transits.append(
            (
                shipment_id,
                name_key(origin_region),
                name_key(destination),
                mode,
                name_key(carrier),
                hours,
                typical,
                final_delay / 2 + chooser.gauss(0, 1),
                final_delay,
                delivered,
            )
        )
    with conn.cursor() as cursor:
        for table, columns, rows in (
            ("shipments", SHIPMENTS, shipments),
            ("tracking_events", EVENTS, events),
            ("lane_transits", TRANSITS, transits),
        ):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"ANALYZE {table}")
