"""Tracking's use cases."""

from __future__ import annotations

from shared.clock import Clock, SystemClock
from shared.db import Database


class Tracking:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()
