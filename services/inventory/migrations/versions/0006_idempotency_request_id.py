"""the request id of an idempotency key's first answer

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 02:00:00.000000
"""

from collections.abc import Sequence

from shared.bus.store import add_idempotency_request_id, drop_idempotency_request_id

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_idempotency_request_id()


def downgrade() -> None:
    drop_idempotency_request_id()
