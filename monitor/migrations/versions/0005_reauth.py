"""reauth: reauthorisation requests (one open per integration) and the audit of their sign-in attempts

Revision ID: 0005
Revises: 0004
Create Date: 2025-04-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "reauth_requests",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False), _str("integration"),
        _str("open_key", True), _str("account", True), _str("code", True), _str("nonce"), _ts("opened_at"),
        _ts("expires_at"), _ts("closed_at", True), _str("closed_by", True),
        sa.UniqueConstraint("open_key", name="uq_reauth_requests_open_key"),
    )
    op.create_index("ix_reauth_requests_integration", "reauth_requests", ["integration"])
    op.create_table(
        "reauth_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True), _str("integration", True), _str("client", True),
        _str("state_hash", True), sa.Column("flow", sa.LargeBinary(), nullable=True), _str("result"),
        _str("signed_in_as", True), sa.Column("detail", sa.Text(), nullable=False), _ts("started_at"),
        _ts("finished_at", True),
        sa.UniqueConstraint("state_hash", name="uq_reauth_attempts_state_hash"),
    )
    op.create_index("ix_reauth_attempts_request", "reauth_attempts", ["request_id"])


def downgrade() -> None:
    op.drop_table("reauth_attempts")
    op.drop_table("reauth_requests")
