"""alerts: incidents, the delivery outbox, notifications (one row per send attempt)

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
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
        "incidents",
        _id(), _str("key"), _str("kind"), _str("code"), _str("tenant", True), _str("client_id", True),
        _str("status"),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("affected", sa.JSON(), nullable=False),
        _ts("opened_at"), _ts("notify_after", True), _ts("notified_at", True), _ts("last_notice_at", True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        _ts("resolved_at", True), _str("resolve_reason", True), _str("ack_by", True), _ts("ack_at", True),
        _ts("snoozed_until", True), _str("held_window", True), _ts("held_until", True),
    )
    op.create_index("ix_incidents_status_key", "incidents", ["status", "key"])
    op.create_table(
        "alert_deliveries",
        _id(), _str("key"), sa.Column("incident_id", sa.Integer(), nullable=True), _str("kind"), _str("route"),
        sa.Column("service", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_markdown", sa.Text(), nullable=False),
        _str("notify_type"), _str("state"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"), _str("claimed_by", True), _ts("claimed_until", True), _ts("created_at"),
        _ts("sent_at", True),
        sa.UniqueConstraint("key", "route", "service", name="uq_alert_deliveries_key_route_service"),
    )
    op.create_index("ix_alert_deliveries_state_next", "alert_deliveries", ["state", "next_attempt_at"])
    op.create_table(
        "notifications",
        _id(), sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True), _str("key"), _str("kind"), _str("route"),
        _str("service"), sa.Column("ok", sa.Boolean(), nullable=False), sa.Column("error", sa.Text(), nullable=True),
        sa.Column("permanent", sa.Boolean(), nullable=False), _ts("at"),
    )
    op.create_index("ix_notifications_incident", "notifications", ["incident_id"])
    op.create_index("ix_notifications_at", "notifications", ["at"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("alert_deliveries")
    op.drop_table("incidents")
