"""lanes kept by the names' key: regions and carriers typed in any case are one lane

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 08:00:00.000000
"""

from collections.abc import Sequence

from shared.contracts import name_key
from shared.db import rewrite_names

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rewrite_names(
        "lane_transits", "shipment_id", ("origin_region", "destination_region", "carrier"), name_key
    )


def downgrade() -> None:
    """Nothing to undo: the names' key is a spelling the code before read as well."""
