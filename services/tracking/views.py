"""Server-rendered pages of this service (Jinja2, Flask-WTF with CSRF)."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Add this service's pages to its app."""
