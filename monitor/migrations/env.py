"""Alembic environment of mailwarden. Run through ``monitor.db.upgrade`` (no alembic.ini on disk).

``monitor.db.upgrade`` hands over an open connection in ``config.attributes["connection"]``; a
Config built by ``monitor.db.alembic_config(url)`` (e.g. to autogenerate a revision) gives a URL
instead. Tables defined outside ``monitor.models`` must be imported here for autogenerate to see them.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import mailwarden.monitor.models  # noqa: F401 (loads the submodule)

config = context.config
target_metadata = SQLModel.metadata


def _configure(**kw: Any) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    context.configure(target_metadata=target_metadata, render_as_batch=True, compare_type=True, **kw)


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from mailwarden.monitor.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
