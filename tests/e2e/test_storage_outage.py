"""A database outage while a delegated token check needs its token cache (item 4 of the hardening issue).

Attacks the runner with PostgreSQL down for 30 s: the delegated token check could not read its token cache, recorded
`config_error`, blocked its mailbox checks, and after the database returned healthy integrations got FAILING and
FLAPPING alerts. Expected: the check is deferred (nothing recorded, no state change) and runs again later; a token
that works while only its rotated refresh token cannot be written stays ok, the cache written at the next use.

The outage is the store's own StorageError (what ``Store`` raises for any failed database call) at the token-cache
read and write: the buffer that keeps other results during an outage has its own test (tests/ha/test_outage.py)."""

from __future__ import annotations

import asyncio
import logging

from mailwarden.errors import StorageError


def outage(*_args, **_kwargs):
    raise StorageError("database postgresql://db/mailwarden failed: connection refused")


def test_a_token_check_that_cannot_read_its_cache_is_deferred_not_failed(world, monkeypatch, caplog):
    w = world("delegated")
    w.sign_in()
    assert w.run("token").status.value == "ok"
    rt = w.open()  # a restarted process: the token cache is not in memory yet
    before = len(rt.store.checks.results("subject", "token"))

    monkeypatch.setattr(rt.store.token_caches, "load_token_cache", outage)
    with caplog.at_level(logging.WARNING):
        result = asyncio.run(rt.runner.run_one("subject", "token"))
    assert result.result is None and result.transition is None  # nothing recorded
    assert (result.outcome.status.value, result.outcome.code) == ("blocked", "storage_unavailable")
    assert "config_error" not in result.outcome.summary
    assert len(rt.store.checks.results("subject", "token")) == before
    assert rt.store.checks.get_state("subject", "token").last_status == "ok"
    assert any(r.getMessage() == "check deferred: the database is unavailable" for r in caplog.records)

    monkeypatch.undo()
    again = asyncio.run(rt.runner.run_one("subject", "token"))
    assert again.outcome.status.value == "ok" and again.transition is None  # no FAILING, no recovery notice


def test_a_token_whose_rotated_cache_cannot_be_written_stays_ok_and_is_written_later(world, monkeypatch):
    w = world("delegated")
    w.sign_in()
    rt = w.open()
    integ = rt.config.integration("subject")
    written = rt.store.token_caches.load_token_cache(rt.tokens.key_of(integ)).updated_at

    monkeypatch.setattr(rt.store.token_caches, "save_token_cache", outage)
    token = rt.tokens.delegated_token(integ, ["https://outlook.office365.com/POP.AccessAsUser.All"],
                                      force_refresh=True)
    assert "access_token" in token  # the sign-in works: only the write waits
    assert rt.tokens.load_cache("subject").has_state_changed  # still to be written

    monkeypatch.undo()
    rt.tokens.delegated_token(integ, ["https://outlook.office365.com/POP.AccessAsUser.All"], force_refresh=True)
    assert rt.store.token_caches.load_token_cache(rt.tokens.key_of(integ)).updated_at > written
