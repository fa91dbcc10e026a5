"""Tracking's message handlers."""

from __future__ import annotations

from shared.bus.consumer import Route

ROUTES: dict[str, Route] = {}
