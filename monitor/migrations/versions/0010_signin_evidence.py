"""sign-in evidence (issue 16): the consuming system's own sign-ins, read from Entra ID's sign-in log.

- own_token_requests: every token request mailwarden sent, by its client-request-id (the sign-in log's
  correlationId), recorded before it was sent; kept 72 hours, so mailwarden's own sign-ins are told apart exactly.
- reauth_windows: reauthorisation sign-ins under way in a browser (untaggable): a sign-in of that app and account
  inside one that matches no own request is "unconfirmed", never the consumer's.
- signins: the sign-in events read (one row per event id, whatever how often a poll re-reads it), kept 14 days.
- signin_polls: per (tenant, event type, app) what has been read and whether it can be (licence, permission, cloud).

All four start empty. The first poll reads back ``evidence.signins.backfill`` (a day), but never before this upgrade
(meta ``signins.recorded_from``): mailwarden's own sign-ins from before it were not recorded, and would otherwise be
taken for the consuming system's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
RECORDED_FROM = "signins.recorded_from"  # since when mailwarden's own token requests are recorded


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=nullable)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "own_token_requests", _id(), _str("correlation_id"), _str("tenant"), _str("client_id"), _ts("at"),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("correlation_id", name="uq_own_token_requests_correlation_id"),
    )
    op.create_index("ix_own_token_requests_at", "own_token_requests", ["at"])
    op.create_table(
        "reauth_windows", _id(), sa.Column("attempt_id", sa.Integer(), nullable=True), _str("integration"),
        _str("tenant_id"), _str("client_id"), _str("account"), _str("source"), _ts("started_at"), _ts("ends_at"),
    )
    op.create_index("ix_reauth_windows_client_account", "reauth_windows", ["client_id", "account", "started_at"])
    op.create_index("ix_reauth_windows_attempt", "reauth_windows", ["attempt_id"])
    op.create_table(
        "signins", _id(), _str("signin_id"), _str("tenant_id"), _str("app_id"), _str("event_type"),
        _ts("created_at"), _str("user_principal_name", True), sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True), _str("credential_key_id", True),
        _str("correlation_id", True), _str("origin"), _ts("read_at"),
        sa.UniqueConstraint("signin_id", name="uq_signins_signin_id"),
    )
    op.create_index("ix_signins_app_type_at", "signins", ["tenant_id", "app_id", "event_type", "created_at"])
    op.create_index("ix_signins_created_at", "signins", ["created_at"])
    op.create_index("ix_signins_correlation_id", "signins", ["correlation_id"])
    op.create_table(
        "signin_polls", _id(), _str("tenant_id"), _str("event_type"), _str("app_id"), _str("state"),
        sa.Column("note", sa.Text(), nullable=True), _ts("checked_at", True), _ts("last_success_at", True),
        _ts("covered_from", True), _ts("read_until", True),
        sa.UniqueConstraint("tenant_id", "event_type", "app_id", name="uq_signin_polls_tenant_type_app"),
    )
    op.get_bind().execute(sa.text("INSERT INTO meta (key, value) VALUES (:key, :value)"),
                          {"key": RECORDED_FROM, "value": datetime.now(UTC).isoformat()})


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM meta WHERE key = :key"), {"key": RECORDED_FROM})
    op.drop_table("signin_polls")
    op.drop_index("ix_signins_correlation_id", table_name="signins")
    op.drop_index("ix_signins_created_at", table_name="signins")
    op.drop_index("ix_signins_app_type_at", table_name="signins")
    op.drop_table("signins")
    op.drop_index("ix_reauth_windows_attempt", table_name="reauth_windows")
    op.drop_index("ix_reauth_windows_client_account", table_name="reauth_windows")
    op.drop_table("reauth_windows")
    op.drop_index("ix_own_token_requests_at", table_name="own_token_requests")
    op.drop_table("own_token_requests")
