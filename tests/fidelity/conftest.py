"""Real Microsoft behaviour, replayed: each test names the public capture (or Microsoft's own text) of a reply,
has the sandbox play it from modelled state, and asserts the check's status, code and the fix's key words.

The worlds are tests/sandbox_fixtures.py's ``world`` (the session's shared sandbox, a fresh tenant per test)."""
