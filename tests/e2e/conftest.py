"""End to end: mailwarden's real code against the sandbox, reached through configuration only.

Each test builds its own tenant (own apps, users, consent setting) in the session's shared sandbox, writes an
ordinary config pointing at it, and runs checks through the runner as `mailwarden check` does. The sandbox and the
``world`` factory are tests/sandbox_fixtures.py's (every area's tests share them); the names stay importable from
here for the test modules that import them.
"""

from __future__ import annotations

from tests.sandbox_fixtures import (  # noqa: F401 - re-exported for the test modules that import them from here
    DELEGATED_SCOPES,
    REDIRECT,
    REQUIRE_APP,
    REQUIRE_DELEGATED,
    World,
    sandbox,
    world,
)
