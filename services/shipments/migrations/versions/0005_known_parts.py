"""inventory's parts, as shipments has heard of them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "known_parts",
        sa.Column("part_number", sa.String(length=64), nullable=False),
        sa.Column("serialized", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("part_number", name=op.f("pk_known_parts")),
    )
    # Parts met before their events were noted: known by number, not by kind.
    op.execute(
        "INSERT INTO known_parts (part_number) "
        "SELECT part_number FROM known_reservations "
        "UNION SELECT part_number FROM shipment_lines"
    )


def downgrade() -> None:
    op.drop_table("known_parts")
