"""history: hourly rollups of check results (uptime bars, latency sparklines), so raw results can be capped

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _int(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "check_rollups",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("integration", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("check", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        _int("total"), _int("ok"), _int("warn"), _int("fail"), _int("error"), _int("blocked"),
        sa.Column("latency_sum_ms", sa.Float(), nullable=False),
        _int("latency_count"),
        sa.Column("latency_max_ms", sa.Float(), nullable=True),
        sa.UniqueConstraint("integration", "check", "hour", name="uq_check_rollups_integration_check_hour"),
    )
    op.create_index("ix_check_rollups_hour", "check_rollups", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_check_rollups_hour", table_name="check_rollups")
    op.drop_table("check_rollups")
