"""Tracking's JSON API under ``/tracking/api/v1``."""

from __future__ import annotations

BLUEPRINTS: tuple = ()
