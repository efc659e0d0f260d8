"""queue mode (issue 20, ``execution.mode: queue``): procrastinate's job queue, and the back-off waits every worker
shares.

- PostgreSQL only: procrastinate 3.10.0's schema (its tables ``procrastinate_jobs``, ``_events``, ``_workers`` and
  ``_periodic_defers``, their types, functions and triggers), vendored byte for byte in
  ``migrations/sql/procrastinate-3.10.0-schema.sql`` and applied in a schema of its own, ``procrastinate``. Its own
  schema because ``compare_metadata`` (tests/monitor/test_storage.py, and any autogenerate) reads the default schema
  only: procrastinate's tables and functions stay out of mailwarden's models, and ``monitor.queue`` reaches them with
  ``search_path=procrastinate``. Skipped when ``procrastinate.procrastinate_jobs`` exists already (the schema file is
  not idempotent: a second run fails on ``CREATE TYPE``). procrastinate tracks no migrations itself ("it's your
  responsibility to keep track of which migrations have been applied"): an upgrade of procrastinate is a new revision
  here that applies the files of its ``sql/migrations`` newer than 3.10.0 (tests/monitor/test_queue_schema.py fails
  until one does). The jobs table gets autovacuum scale factors of 0.02: its rows come and go by the thousand, and
  ``fetch_job`` on stale statistics took 0.65-0.9 s a fetch (docs/queue-mode-research.md, E9).
- Both dialects: backoff_waits, one row per target (``checks.base.targets``) that a server asked to wait, until when,
  and the status, code and why that a check not run repeats (``monitor.backoff.SharedBackoff``). Rows expire at
  ``until``; ``store.backoff.prune`` deletes them.

Runs inside ``monitor.db.upgrade``'s transaction (and its advisory lock on PostgreSQL): two instances starting at once
apply the schema once.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "procrastinate"
SCHEMA_SQL = Path(__file__).resolve().parents[1] / "sql" / "procrastinate-3.10.0-schema.sql"


def _str(name: str, nullable: bool = False, primary_key: bool = False) -> sa.Column:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=nullable, primary_key=primary_key)


def _queue(conn: sa.Connection) -> None:
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    if conn.exec_driver_sql(f"SELECT to_regclass('{SCHEMA}.procrastinate_jobs')").scalar() is None:
        # The schema file names nothing by schema: its objects land in the first schema of the search_path. Set only
        # for this transaction, and put back at once, so that alembic_version is written where it was read.
        previous = conn.exec_driver_sql("SHOW search_path").scalar()
        conn.exec_driver_sql(f"SET LOCAL search_path TO {SCHEMA}")
        # Through the driver with no parameters psycopg still reads % as a placeholder (the file has `%` in its
        # format() calls): doubled, as procrastinate's own apply_schema does.
        conn.exec_driver_sql(SCHEMA_SQL.read_text(encoding="utf-8").replace("%", "%%"))
        conn.execute(sa.text("SELECT set_config('search_path', :previous, true)"), {"previous": previous})
    conn.exec_driver_sql(f"ALTER TABLE {SCHEMA}.procrastinate_jobs SET (autovacuum_analyze_scale_factor=0.02, "
                         "autovacuum_vacuum_scale_factor=0.02)")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        _queue(conn)
    op.create_table(
        "backoff_waits", _str("target", primary_key=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),  # UTCDateTime's column, as in 0010 and 0011
        _str("status"), _str("code", True), _str("why"),
    )


def downgrade() -> None:
    op.drop_table("backoff_waits")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
