"""Queue mode's shared back-off (issue 20): a wait one worker heard holds on every worker. ``store.backoff`` keeps
one row per target and never shortens a wait; ``SharedBackoff`` writes each wait through and reads the waits of the
targets it is about to touch; a database that fails is one warning, and the wait heard here still holds. Every
storage test runs on SQLite and on PostgreSQL (``store``, ``database_url``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from mailwarden.monitor.backoff import Backoff, SharedBackoff, Wait
from mailwarden.monitor.db import Store, make_engine, open_store
from mailwarden.redact import register_secret

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
IMAP = "imap:support@contoso.com"
TOKEN = "token:contoso.onmicrosoft.com:11111111-2222-3333-4444-555555555555"


def wait(seconds: int, status: str = "fail", code: str | None = "throttled", why: str = "IMAP asked to wait") -> Wait:
    return Wait(T0 + timedelta(seconds=seconds), status, code, why)


def test_defer_keeps_the_later_until(store):
    store.backoff.defer(IMAP, wait(60, why="first"))
    store.backoff.defer(IMAP, wait(30, status="error", code=None, why="shorter"))  # never shortens
    got = store.backoff.waits([IMAP], T0)[IMAP]
    assert got == wait(60, why="first")
    assert got.until.tzinfo is not None and got.until.utcoffset() == timedelta(0)
    store.backoff.defer(IMAP, wait(90, status="error", code=None, why="longer"))
    assert store.backoff.waits([IMAP], T0) == {IMAP: wait(90, status="error", code=None, why="longer")}


def test_waits_leaves_out_expired_waits_and_other_targets(store):
    store.backoff.defer(IMAP, wait(60))
    store.backoff.defer(TOKEN, wait(10, why="token endpoint asked"))
    store.backoff.defer("graph:other", wait(60))
    assert store.backoff.waits([IMAP, TOKEN], T0 + timedelta(seconds=5)) == {
        IMAP: wait(60), TOKEN: wait(10, why="token endpoint asked")}
    assert store.backoff.waits([IMAP, TOKEN], T0 + timedelta(seconds=10)) == {IMAP: wait(60)}  # over at `until`
    assert store.backoff.waits([], T0) == {}
    assert store.backoff.prune(T0 + timedelta(seconds=10)) == 1
    assert store.backoff.waits([IMAP, TOKEN, "graph:other"], T0) == {IMAP: wait(60), "graph:other": wait(60)}


def test_a_stored_why_is_redacted(store):
    secret = "Qx8~backoff-secret-value-1234567890"
    register_secret(secret)
    store.backoff.defer(IMAP, wait(60, why=f"rejected {secret}"))
    with store.engine.connect() as conn:
        assert secret not in repr(conn.execute(text("SELECT * FROM backoff_waits")).all())


async def test_in_memory_publish_is_a_local_wait():
    backoff = Backoff()
    await backoff.sync([IMAP], T0)
    assert backoff.waiting([IMAP], T0) is None
    await backoff.publish(IMAP, wait(60))
    assert backoff.waiting([TOKEN, IMAP], T0) == (IMAP, wait(60))


async def test_a_wait_published_by_one_worker_holds_on_another(database_url):
    one, two = open_store(database_url), open_store(database_url)  # two workers: two stores on one database
    try:
        first, second = SharedBackoff(one), SharedBackoff(two, refresh_s=0)
        await second.sync([IMAP], T0)
        assert second.waiting([IMAP], T0) is None
        await first.publish(IMAP, wait(60))
        assert first.waiting([IMAP], T0) == (IMAP, wait(60))
        await second.sync([TOKEN, IMAP], T0 + timedelta(seconds=1))
        assert second.waiting([TOKEN, IMAP], T0 + timedelta(seconds=1)) == (IMAP, wait(60))
        assert second.waiting([IMAP], T0 + timedelta(seconds=60)) is None  # and ends when it ends
    finally:
        one.close()
        two.close()


async def test_a_target_read_within_refresh_s_is_not_read_again(database_url):
    one, two = open_store(database_url), open_store(database_url)
    try:
        first, second = SharedBackoff(one), SharedBackoff(two, refresh_s=3600)
        await second.sync([IMAP], T0)
        await first.publish(IMAP, wait(60))
        await second.sync([IMAP], T0)  # read a moment ago: no query, the wait is learnt at the next refresh
        assert second.waiting([IMAP], T0) is None
        await second.sync([TOKEN], T0)  # not read yet: read now
        await first.publish(TOKEN, wait(30))
        second.refresh_s = 0
        await second.sync([IMAP, TOKEN], T0)
        assert second.waiting([IMAP], T0) == (IMAP, wait(60))
        assert second.waiting([TOKEN], T0) == (TOKEN, wait(30))
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("url", [
    "sqlite:////nonexistent-mailwarden-dir/mailwarden.db",
    "postgresql+psycopg://mailwarden:Zp4-dead-db-password@127.0.0.1:1/mailwarden",  # nothing listens on port 1
], ids=["sqlite", "postgres"])
async def test_a_database_that_fails_is_one_warning_and_the_local_wait_holds(url, caplog):
    caplog.set_level(logging.WARNING, logger="mailwarden.runner")
    register_secret("Zp4-dead-db-password")
    dead = Store(make_engine(url))
    try:
        backoff = SharedBackoff(dead, refresh_s=0)
        await backoff.publish(IMAP, wait(60))  # raises nothing
        await backoff.sync([IMAP, TOKEN], T0)
        await backoff.publish(TOKEN, wait(30))
        assert backoff.waiting([IMAP], T0) == (IMAP, wait(60))
        assert backoff.waiting([TOKEN], T0) == (TOKEN, wait(30))
    finally:
        dead.close()
    warnings = [r for r in caplog.records if r.name == "mailwarden.runner" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "shared back-off" in warnings[0].getMessage()
    assert "Zp4-dead-db-password" not in repr(vars(warnings[0]))
