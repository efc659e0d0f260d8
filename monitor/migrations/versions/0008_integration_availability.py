"""integration availability: integration_rollups, one row per (integration, hour) with the seconds in which all its
checks' states (after the failure/success thresholds) were good (up_ms, milliseconds) and those in which one was bad
(down_ms). Paused time, maintenance windows and the time before a check's first state count in neither, so
availability is up_ms / (up_ms + down_ms) over any window of hours (monitor.db_history).

The table starts empty; the history job fills it from the stored transitions (never pruned), from the oldest
hourly check rollup on and a week per run, so the 30-day figures are there within minutes of the upgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_rollups",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("integration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("up_ms", sa.Integer(), nullable=False),
        sa.Column("down_ms", sa.Integer(), nullable=False),
        sa.UniqueConstraint("integration", "hour", name="uq_integration_rollups_integration_hour"),
    )
    op.create_index("ix_integration_rollups_hour", "integration_rollups", ["hour"])
    op.create_index("ix_integration_rollups_integration_hour", "integration_rollups",
                    ["integration", "hour", "up_ms", "down_ms"])


def downgrade() -> None:
    op.drop_index("ix_integration_rollups_integration_hour", table_name="integration_rollups")
    op.drop_index("ix_integration_rollups_hour", table_name="integration_rollups")
    op.drop_table("integration_rollups")
    op.execute("DELETE FROM meta WHERE key = 'history.availability_from'")
