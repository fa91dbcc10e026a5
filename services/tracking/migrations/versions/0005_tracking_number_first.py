"""a shipment's tracking number first in its carrier index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 23:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Led by the number, the index also finds a carrier's event that writes its name
    # or the number in another case (the number in a few spellings, the name compared
    # on the rows found).
    op.drop_index("ix_shipments_tracking_number", table_name="shipments")
    op.create_index("ix_shipments_tracking_number", "shipments", ["tracking_number", "carrier"])


def downgrade() -> None:
    op.drop_index("ix_shipments_tracking_number", table_name="shipments")
    op.create_index("ix_shipments_tracking_number", "shipments", ["carrier", "tracking_number"])
