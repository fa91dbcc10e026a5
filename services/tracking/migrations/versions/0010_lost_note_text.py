"""a lost shipment keeps the whole note the carrier sent (up to 1,000 characters)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shipments") as batch:
        batch.alter_column("lost_note", type_=sa.Text(), existing_type=sa.String(length=500))


def downgrade() -> None:
    with op.batch_alter_table("shipments") as batch:
        batch.alter_column("lost_note", type_=sa.String(length=500), existing_type=sa.Text())
