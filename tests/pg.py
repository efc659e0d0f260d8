"""The shared PostgreSQL server of the tests (127.0.0.1:5432, trust auth): an admin connection, and a fresh database
of one test's own, dropped at the end. Off CI a missing server skips the test with the reason; on CI it fails it
(``tests.conftest.require_service``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from bench.pg import PG_HOST, PG_PORT, admin_connect
from tests.conftest import require_service

__all__ = ["PG_HOST", "PG_PORT", "admin_connect", "fresh_database"]



@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database named ``<prefix>_<random>``, dropped when the block ends."""
    try:
        admin, user = admin_connect()
    except ConnectionError as exc:
        require_service("PostgreSQL", f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({exc})")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
