"""shared rate budget table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crmsync_rate_budget",
        sa.Column("site", sa.String(length=255), nullable=False),
        sa.Column("bucket_end_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("site", "bucket_end_ms"),
    )


def downgrade() -> None:
    # The table only holds the last minute of request counts: nothing is lost by dropping it.
    op.drop_table("crmsync_rate_budget")
