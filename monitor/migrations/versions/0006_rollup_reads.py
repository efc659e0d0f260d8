"""rollup reads: an index on check_rollups (integration, hour, check, ok, warn, total) that answers the
overview's 24-hour uptime (every integration, hour > since) and an integration's 31 days of uptime bars
without reading the table (bench/: 0.36 s and 15-20 ms per integration page at 1,000 integrations).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["integration", "hour", "check", "ok", "warn", "total"]


def upgrade() -> None:
    op.create_index("ix_check_rollups_integration_hour", "check_rollups", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_check_rollups_integration_hour", table_name="check_rollups")
