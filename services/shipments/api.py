"""Shipments's JSON API under ``/shipments/api/v1``."""

from __future__ import annotations

BLUEPRINTS: tuple = ()
