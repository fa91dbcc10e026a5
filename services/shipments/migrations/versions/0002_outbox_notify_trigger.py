"""outbox notify trigger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 00:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

from shared.bus.store import DROP_OUTBOX_NOTIFY_TRIGGER, OUTBOX_NOTIFY_TRIGGER

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(OUTBOX_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_OUTBOX_NOTIFY_TRIGGER)
