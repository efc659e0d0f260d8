"""Real Microsoft behaviour, replayed: each test names the public capture (or Microsoft's own text) of a reply,
has the sandbox play it from modelled state, and asserts the check's status, code and the fix's key words.

The worlds come from tests/e2e (one session-wide sandbox, a fresh tenant per test)."""

from tests.e2e.conftest import sandbox, world  # noqa: F401 - fixtures shared with the end-to-end tests
