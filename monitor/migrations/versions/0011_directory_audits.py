"""directory audits (issue 16, "who changed it"): the directory changes to monitored apps read from Entra ID's
directory audit log (Graph ``auditLogs/directoryAudits``, every edition), so that an alert can name who changed what
and when.

- directory_audits: one row per event id (a poll re-reads its overlap), kept as sign-ins are
  (``evidence.signins.keep``). Where reading a tenant's log stands, and the object ids of its monitored apps, are
  in the meta table (``directory_audits.poll.<tenant id>``, ``directory_audits.ids.<tenant id>``).

Starts empty: the first poll reads back ``evidence.signins.backfill``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "directory_audits", sa.Column("id", sa.Integer(), primary_key=True, nullable=False), _str("audit_id"),
        _str("tenant_id"), _str("app_id"), _str("target"), _str("change"), _str("activity"), _ts("activity_at"),
        _str("subject", True), _str("initiator_upn", True), _str("initiator_name", True),
        _str("initiator_app_id", True), _ts("read_at"),
        sa.UniqueConstraint("audit_id", name="uq_directory_audits_audit_id"),
    )
    op.create_index("ix_directory_audits_app_at", "directory_audits", ["app_id", "activity_at"])
    op.create_index("ix_directory_audits_activity_at", "directory_audits", ["activity_at"])


def downgrade() -> None:
    op.drop_index("ix_directory_audits_activity_at", table_name="directory_audits")
    op.drop_index("ix_directory_audits_app_at", table_name="directory_audits")
    op.drop_table("directory_audits")
