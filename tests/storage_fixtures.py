"""The storage fixtures every area's tests share (a pytest plugin, loaded by tests/conftest.py): each storage test
runs on SQLite and on PostgreSQL.

- ``pg_database`` (session): (URL, None) of a database on the shared server made and migrated once for the session
  and dropped at its end, or (None, why not).
- ``store``: an open ``Store`` on a new SQLite file or on that database, emptied.
- ``database_url``: the URL of such an empty database, for tests that open their own stores or processes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from mailwarden.monitor.db import open_store
from mailwarden.monitor.models import TABLE_NAMES
from tests.conftest import require_service
from tests.pg import PG_HOST, PG_PORT, admin_connect

BOTH = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database for this test session, migrated once; dropped at the end."""
    try:
        admin, user = admin_connect()
    except ConnectionError as exc:
        yield None, f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({exc})"
        return
    name = f"mailwarden_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        open_store(url).close()
        yield url, None
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _emptied_pg(request) -> str:
    url, why_not = request.getfixturevalue("pg_database")
    if url is None:
        require_service("PostgreSQL", why_not)
    s = open_store(url)
    with s.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLE_NAMES)} RESTART IDENTITY"))
    s.close()
    return url


@pytest.fixture(params=BOTH)
def database_url(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mailwarden.db'}" if request.param == "sqlite" else _emptied_pg(request)


@pytest.fixture(params=BOTH)
def store(request, tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'mailwarden.db'}" if request.param == "sqlite" else _emptied_pg(request))
    yield s
    s.close()
