"""The result buffer (monitor.buffer) and the lease (monitor.leader), in process: fast."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from mailwarden import state as sm
from mailwarden.checks.base import Outcome, Status
from mailwarden.errors import StorageError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.buffer import Pending, ResultBuffer
from mailwarden.monitor.db import open_store
from mailwarden.monitor.leader import LocalLease, PgLease, lease_for
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor
from tests.monitor.test_scheduler import integ, kinds, write_config  # noqa: F401 - the scripted check kinds

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
TH = sm.Thresholds(failure_threshold=2, success_threshold=2)
SEQ = ["ok", "fail", "fail", "ok", "fail", "ok", "ok", "error", "error", "error", "warn", "ok", "blocked", "ok"]


def outcome(status: str) -> Outcome:
    return Outcome(Status(status), None if status in ("ok", "warn") else f"{status}_code", f"{status} result")


class Down:
    """A store whose writes fail while ``down`` (the database unreachable), as Store.checks.record_result does."""

    def __init__(self, store):
        self.store, self.down = store, False
        self.engine = store.engine

    def record_result(self, **kw):
        if self.down:
            raise StorageError("database failed: connection refused")
        return self.store.checks.record_result(**kw)


def history(store, check="token"):
    results = store.checks.results("i", check, limit=100)
    trans = sorted((t.id, t.from_status, t.to_status, t.at) for t in store.checks.transitions("i") if t.check == check)
    st = store.checks.get_state("i", check)
    return ([(r.status, r.checked_at) for r in sorted(results, key=lambda r: r.id)], trans,
            (st.status, st.failures, st.successes, st.since))


def test_folding_the_buffer_gives_the_states_and_transitions_of_an_uninterrupted_run(tmp_path, caplog):
    direct = open_store(f"sqlite:///{tmp_path / 'direct.db'}")
    flaky = Down(open_store(f"sqlite:///{tmp_path / 'flaky.db'}"))
    buffer = ResultBuffer()
    caplog.set_level(logging.INFO, "mailwarden.storage")
    for i, status in enumerate(SEQ):
        at = T0 + timedelta(minutes=i)
        direct.checks.record_result(integration="i", check="token", outcome=outcome(status), checked_at=at,
                                    thresholds=TH)
        flaky.down = 3 <= i < 11
        item = Pending("i", "token", outcome(status), at, TH)
        if len(buffer):
            buffer.add(item)
        else:
            try:
                flaky.record_result(integration="i", check="token", outcome=item.outcome, checked_at=at,
                                    thresholds=TH)
            except StorageError as exc:
                buffer.unavailable(exc.message())
                buffer.add(item)
        if 5 <= i < 11:
            assert buffer.flush(flaky) is None  # still down: nothing written, nothing lost, order kept
        if i == 11:
            written, transitions = buffer.flush(flaky)
            assert written == 9 and [t.to_status for t in transitions] == ["ok", "error", "ok"]
    assert len(buffer) == 0
    assert history(flaky.store) == history(direct)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("storage unavailable") == 1 and msgs.count("storage available again") == 1


def test_a_full_buffer_drops_the_oldest_ok_results_first(caplog):
    buffer = ResultBuffer(capacity=4)
    for i, status in enumerate(["fail", "ok", "fail", "ok", "fail", "fail", "error"]):
        buffer.add(Pending("i", "token", outcome(status), T0 + timedelta(minutes=i), TH))
    kept = [(p.status, p.checked_at.minute) for p in buffer._items]
    # the two ok results went first, then the oldest failure
    assert kept == [("fail", 2), ("fail", 4), ("fail", 5), ("error", 6)]
    assert buffer.dropped == 3
    full = "result buffer full: dropping the oldest ok results first"
    assert [r.getMessage() for r in caplog.records].count(full) == 1


def test_sqlite_is_always_the_leader():
    assert isinstance(lease_for("sqlite:///x.db"), LocalLease)
    assert isinstance(lease_for("postgresql://u@h/db"), PgLease)


@pytest.mark.postgres
def test_the_lease_is_one_session_lock_with_keepalives(shared_pg_url):
    a, b = PgLease(shared_pg_url, key=4242), PgLease(shared_pg_url, key=4242)
    try:
        assert a.acquire() is True and a.held
        assert b.acquire() is False and not b.held
        assert a.verify() and not b.verify()
        # keepalives on both ends: a dead network is noticed in seconds, not hours
        assert a.conn.info.get_parameters()["tcp_user_timeout"] == "10000"
        assert a.conn.execute("SHOW tcp_user_timeout").fetchone()[0] in ("10s", "10000")
        assert a.conn.execute("SHOW tcp_keepalives_idle").fetchone()[0] in ("5", "5s")
        # the session ends (here: terminated by an admin): the lock goes with it
        pid = a.conn.info.backend_pid
        with psycopg.connect(shared_pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert a.verify() is False and not a.held and a.error
        assert b.acquire() is True
        assert a.acquire() is False  # the other holds it now: a stands down
        b.close()  # the server drops b's lock when its backend has ended, a moment after the client closed
        deadline = time.monotonic() + 5
        while not a.acquire():
            assert time.monotonic() < deadline, "the lock was not free 5 s after its holder closed"
            time.sleep(0.05)
    finally:
        a.close()
        b.close()


def test_an_unreachable_database_is_none_not_an_error():
    lease = PgLease("postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert lease.acquire() is None and lease.error and not lease.held


async def test_monitor_checks_on_in_an_outage_and_writes_all_before_dispatch(tmp_path, kinds, caplog):  # noqa: F811
    token, mail = kinds
    mail.depends_on = ("token",)  # blocked while the token check fails, as the mailbox kinds are
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    monitor = Monitor(open_runtime(config_mod.load(cfg)), cfg)
    monitor._attach(monitor.runtime)
    store = monitor.runtime.store
    down = False
    real_record, real_state = store.checks.record_results, store.checks.get_state

    def guarded(real):
        def call(*a, **kw):
            if down:
                raise StorageError("database failed: connection refused")
            return real(*a, **kw)
        return call

    store.checks.record_results, store.checks.get_state = guarded(real_record), guarded(real_state)
    caplog.set_level(logging.INFO)
    try:
        await monitor._run_local("i0", "token")
        down = True
        token.script["i0"] = [Outcome(Status.FAIL, "secret_expired", "expired")]
        for kind in ("token", "mail_test", "token", "mail_test"):
            await monitor._run_local("i0", kind)
        assert len(monitor.buffer) == 4 and mail.calls == ["i0"]  # blocked first (known in memory), then run
        assert await monitor._ready() is False  # no dispatch while results wait
        down = False
        assert await monitor._ready() is True
    finally:
        monitor.shutdown()
    store = open_runtime(config_mod.load(cfg)).store
    assert [(r.check, r.status) for r in sorted(store.checks.results("i0", limit=50), key=lambda r: r.id)] == [
        ("token", "ok"), ("token", "fail"), ("mail_test", "blocked"), ("token", "ok"), ("mail_test", "ok")]
    assert [(t.check, t.from_status, t.to_status) for t in sorted(store.checks.transitions("i0"), key=lambda t: t.id)] \
        == [("token", "new", "ok"), ("token", "ok", "fail"), ("mail_test", "new", "blocked"),
            ("token", "fail", "ok"), ("mail_test", "blocked", "ok")]
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("storage unavailable") == 1 and msgs.count("storage available again") == 1
    assert "check job failed" not in msgs
    store.close()


async def test_a_dispatch_whose_instance_stood_down_meanwhile_sends_nothing(tmp_path, kinds, caplog):  # noqa: F811
    """Leadership lost while the buffer flushed (before the dispatch runs): another instance dispatches now, so this
    one neither dispatches nor logs a failure (it read the stood-down dispatcher after the await and crashed)."""
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    monitor = Monitor(open_runtime(config_mod.load(cfg)), cfg)
    monitor._attach(monitor.runtime)
    real_ready = monitor._ready

    async def ready_then_stand_down() -> bool:
        ready = await real_ready()
        monitor.stand_down()  # another instance took the lease meanwhile
        return ready

    monitor._ready = ready_then_stand_down
    caplog.set_level(logging.INFO)
    try:
        await monitor._dispatch()
    finally:
        monitor.shutdown()
    assert "alert dispatch failed" not in [r.getMessage() for r in caplog.records]
