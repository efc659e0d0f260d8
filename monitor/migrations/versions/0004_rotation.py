"""rotation: expiry reminder stages sent per credential, rotation state per credential, rotation audit

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-15 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
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
        "expiry_reminders",
        _id(), _str("client_id"), _str("key_id"), _str("app"), sa.Column("stage", sa.Integer(), nullable=False),
        _ts("expires_at"), sa.Column("integrations", sa.JSON(), nullable=False), _ts("sent_at"),
        sa.UniqueConstraint("client_id", "key_id", "stage", name="uq_expiry_reminders_client_key_stage"),
    )
    op.create_table(
        "rotations",
        _id(), _str("client_id"), _str("key_id"), _str("app"), _str("tenant"), _str("hint", True),
        _ts("old_expires_at", True), _str("state"), _str("new_key_id", True), _str("new_hint", True),
        _ts("new_expires_at", True), _str("reference", True), sa.Column("automated", sa.Boolean(), nullable=False),
        _str("auto_step", True), sa.Column("auto_error", sa.Text(), nullable=True), _ts("remove_after", True),
        _ts("started_at"), _ts("updated_at"), _ts("new_seen_at", True), _ts("in_use_at", True),
        _ts("removed_at", True), _ts("remind_remove_at", True), _ts("stuck_alert_at", True),
        sa.UniqueConstraint("client_id", "key_id", name="uq_rotations_client_key"),
    )
    op.create_table(
        "rotation_events",
        _id(), _str("client_id"), _str("app"), _str("key_id", True), _str("new_key_id", True), _str("step"),
        sa.Column("ok", sa.Boolean(), nullable=False), sa.Column("detail", sa.Text(), nullable=False), _ts("at"),
    )
    op.create_index("ix_rotation_events_client_at", "rotation_events", ["client_id", "at"])


def downgrade() -> None:
    op.drop_table("rotation_events")
    op.drop_table("rotations")
    op.drop_table("expiry_reminders")
