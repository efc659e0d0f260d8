"""Shared test helpers. Keep this generic: fixtures of one area live beside that area's tests."""

from __future__ import annotations

import os

import pytest

# shared fixtures: pg_database, store, database_url (SQLite and PostgreSQL); browser (Debian's chromium); the
# session's shared sandbox, a fresh one, and the end-to-end worlds in it
pytest_plugins = ["tests.storage_fixtures", "tests.browser_fixtures", "tests.sandbox_fixtures"]


def services_required() -> bool:
    """CI sets MAILWARDEN_REQUIRE_SERVICES=1: a missing service is then a failure, not a skip."""
    return os.environ.get("MAILWARDEN_REQUIRE_SERVICES") == "1"


def require_service(name: str, reason: str) -> None:
    """Skip the test because ``name`` is unavailable, or fail it when services are required (CI)."""
    if services_required():
        pytest.fail(f"{name} is required (MAILWARDEN_REQUIRE_SERVICES=1): {reason}", pytrace=False)
    pytest.skip(reason)
