"""raw results kept by age (issue 19, item 4: ``web.retention.raw_hours``): a partial index of the non-ok results,
ix_check_results_failures (integration, check, checked_at) WHERE status NOT IN ('ok', 'warn'). The hourly prune
reads the failures it keeps from it instead of scanning the whole table: with 48 hours of results kept, 10,000
integrations x 5 checks hold ~29 million rows, and the scan was ~2.5 s of the prune's write lock on SQLite
(bench/history.py). Built once at the upgrade (one pass over check_results; writes wait for it).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAILED = "status NOT IN ('ok', 'warn')"  # as db_history._failed renders it: SQLite matches the term, constants included


def upgrade() -> None:
    op.create_index("ix_check_results_failures", "check_results", ["integration", "check", "checked_at"],
                    sqlite_where=sa.text(FAILED), postgresql_where=sa.text(FAILED))


def downgrade() -> None:
    op.drop_index("ix_check_results_failures", table_name="check_results")
