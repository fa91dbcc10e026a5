"""lanes kept by their regions' key: a region typed in any case is one lane's end

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 08:00:00.000000
"""

from collections.abc import Sequence

from shared.contracts import name_key
from shared.db import rewrite_names

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rewrite_names("lane_transits", "shipment_id", ("origin_region", "destination_region"), name_key)


def downgrade() -> None:
    """Nothing to undo: the regions' key is a spelling the code before read as well."""
