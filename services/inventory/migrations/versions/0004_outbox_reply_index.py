"""outbox index of answers to commands

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 05:00:00.000000
"""

from collections.abc import Sequence

from shared.bus.store import create_reply_index, drop_reply_index

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_reply_index()


def downgrade() -> None:
    drop_reply_index()
