"""initial schema: integrations, credentials, results, states, transitions, token caches, meta

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=nullable)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "integrations",
        _id(), _str("name"), _str("tenant"), _str("app"), _str("flow"), _str("mailbox"),
        _str("account", True), _str("system", True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("owners", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        _str("config_hash"), _ts("created_at"), _ts("updated_at"), _ts("removed_at", True),
        sa.UniqueConstraint("name", name="uq_integrations_name"),
    )
    op.create_table(
        "credentials",
        _id(), _str("tenant"), _str("app"), _str("client_id"), _str("kind"), _str("reference", True),
        _str("key_id", True), _str("display_name", True), _str("hint", True), _str("thumbprint", True),
        _ts("start_at", True), _ts("expires_at", True), _str("source"), _ts("first_seen_at"),
        _ts("last_seen_at"), _ts("removed_at", True), _ts("last_verified_at", True),
    )
    op.create_index("ux_credentials_identity", "credentials",
                    ["client_id", "kind", sa.text("coalesce(key_id, '')")], unique=True)
    op.create_index("ix_credentials_expires_at", "credentials", ["expires_at"])
    op.create_table(
        "check_results",
        _id(), _str("integration"), _str("check"), _str("status"), _str("code", True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        _ts("checked_at"),
    )
    op.create_index("ix_check_results_integration_check_at", "check_results",
                    ["integration", "check", "checked_at"])
    op.create_index("ix_check_results_checked_at", "check_results", ["checked_at"])
    op.create_table(
        "check_states",
        _id(), _str("integration"), _str("check"), _str("status"),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        _ts("since", True), _str("last_status", True), _str("last_code", True),
        sa.Column("last_result_id", sa.Integer(), nullable=True),
        _ts("last_checked_at", True), _ts("last_ok_at", True), _ts("not_before", True),
        sa.UniqueConstraint("integration", "check", name="uq_check_states_integration_check"),
    )
    op.create_table(
        "transitions",
        _id(), _str("integration"), _str("check"), _str("from_status"), _str("to_status"), _str("code", True),
        sa.Column("result_id", sa.Integer(), nullable=True),
        _ts("at"),
        sa.Column("silent", sa.Boolean(), nullable=False),
        _ts("processed_at", True),
    )
    op.create_index("ix_transitions_integration_at", "transitions", ["integration", "at"])
    op.create_index("ix_transitions_processed_at", "transitions", ["processed_at"])
    op.create_table(
        "token_caches",
        _id(), _str("integration"),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        _str("key_fingerprint"), _str("account", True), _ts("updated_at"),
        sa.UniqueConstraint("integration", name="uq_token_caches_integration"),
    )
    op.create_table("meta", sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), primary_key=True),
                    _str("value"))


def downgrade() -> None:
    for table in ("meta", "token_caches", "transitions", "check_states", "check_results", "credentials",
                  "integrations"):
        op.drop_table(table)
