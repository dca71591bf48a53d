"""quarantine: retry requested by an operator

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An operator's "retry next run" on the Sync page: the next run stages the held copy
    # again whatever the hold's kind (store/staging.py carry_quarantined), then clears it.
    with op.batch_alter_table("crmsync_quarantine", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retry_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # Only pending retry requests are lost: the holds themselves stay.
    with op.batch_alter_table("crmsync_quarantine", schema=None) as batch_op:
        batch_op.drop_column("retry_requested")
