"""public client tokens: token_caches.public_client (the refresh token was issued to a public client, so it is
refreshed without the app's secret: presenting one is refused with AADSTS700025) and token_caches.oid (the
object id of the user whose sign-in was accepted, the identity evidence when Graph cannot be read).

Rows written before this revision read back as confidential (public_client false) with no recorded oid:
exactly how they were stored and refreshed until now.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("token_caches") as batch:
        batch.add_column(sa.Column("public_client", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("oid", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("token_caches") as batch:
        batch.drop_column("oid")
        batch.drop_column("public_client")
