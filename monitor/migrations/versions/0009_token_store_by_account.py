"""token store by account: a refresh token belongs to (tenant, app, account), not to one integration, so the
integrations of one account (an Oracle B2C Service user's several mailboxes, a House-on-the-Hill delegate's POP
and IMAP integrations) share it, one revocation is one incident, and one reauthorisation fixes them all.

token_caches.token_key (``<tenant id>:<client id>:<account>``, lower case, unique) is the new key; the integration
column stays as the integration that last stored the row (no longer unique). Rows written before this revision
have no token_key: the first integration to ask for its token adopts its own row (by its name, the old key) and
sets it, so no stored token is lost and nobody has to sign in again (monitor.tokens).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("token_caches") as batch:
        batch.add_column(sa.Column("token_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.drop_constraint("uq_token_caches_integration", type_="unique")
        batch.create_unique_constraint("uq_token_caches_token_key", ["token_key"])
        batch.create_index("ix_token_caches_integration", ["integration"])


def downgrade() -> None:
    # one row per integration again: of rows sharing an integration name, the newest stays
    conn = op.get_bind()
    conn.execute(sa.text(
        "DELETE FROM token_caches WHERE id NOT IN (SELECT MAX(id) FROM token_caches GROUP BY integration)"))
    with op.batch_alter_table("token_caches") as batch:
        batch.drop_index("ix_token_caches_integration")
        batch.drop_constraint("uq_token_caches_token_key", type_="unique")
        batch.create_unique_constraint("uq_token_caches_integration", ["integration"])
        batch.drop_column("token_key")
