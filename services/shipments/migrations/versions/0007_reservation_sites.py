"""where each known reservation's part must go, and the units it holds

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("known_reservations") as batch:
        batch.add_column(sa.Column("site_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("site_region", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("serials", sa.Text(), nullable=True))
    # Reservations noted before: their site and units as the shipment planned for them
    # says (the first, planned from the reservation itself); unknown otherwise (a line
    # that named no units says nothing of them).
    op.execute(
        "UPDATE known_reservations SET "
        "site_name = (SELECT s.destination_site FROM shipment_lines l "
        "  JOIN shipments s ON s.id = l.shipment_id "
        "  WHERE l.reservation_id = known_reservations.id AND s.destination_site IS NOT NULL "
        "  ORDER BY s.created_at LIMIT 1), "
        "site_region = (SELECT s.destination_region FROM shipment_lines l "
        "  JOIN shipments s ON s.id = l.shipment_id "
        "  WHERE l.reservation_id = known_reservations.id AND s.destination_site IS NOT NULL "
        "  ORDER BY s.created_at LIMIT 1), "
        "serials = (SELECT l.serials FROM shipment_lines l "
        "  JOIN shipments s ON s.id = l.shipment_id "
        "  WHERE l.reservation_id = known_reservations.id AND l.serials != '' "
        "  ORDER BY s.created_at LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("known_reservations") as batch:
        batch.drop_column("serials")
        batch.drop_column("site_region")
        batch.drop_column("site_name")
