"""A queue worker's job before it runs its check (monitor.worker.CheckJobs): a result already stored for the due time
is not taken again (the leader ran the check during a queue outage, or the job is run again after its worker was lost
once the first run had stored it); a check Microsoft asked to wait is not run; a check no longer configured is
skipped. None of these reach the check's mailbox; the first two are found once the job holds its slots (a run of the
same check may store its result while the job waits for them), a check no longer configured takes none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mailwarden.monitor.worker import CheckJobs


class NoSlots:
    """Fails the test if a job that must not run asks for a slot."""

    async def acquire(self, needs, *, timeout):
        raise AssertionError(f"a slot was asked for: {needs}")


class FreeSlots:
    """Grants every acquisition at once and counts what is held."""

    def __init__(self):
        self.held = 0

    async def acquire(self, needs, *, timeout):
        self.held += 1
        return object()

    async def release(self, held):
        self.held -= 1


def _jobs(w, slots=None):
    rt = w.runtime or w.open()
    return CheckJobs(lambda: rt, slots or FreeSlots(), enqueuer=None), rt  # type: ignore[arg-type]


def test_a_result_stored_for_the_due_time_is_not_taken_again(world):
    w = world("app")
    jobs, rt = _jobs(w)
    due = datetime.now(UTC)
    w.run("token")
    before = len(rt.store.checks.results("subject", "token"))
    assert asyncio.run(jobs.run("subject", "token", due.isoformat(), job_id=7)) == "fresh"
    assert len(rt.store.checks.results("subject", "token")) == before == 1
    assert jobs.counts.fresh == 1
    assert jobs.slots.held == 0  # given back


def test_a_check_microsoft_asked_to_wait_is_not_run(world):
    w = world("app", checks={"secret_expiry": {}})
    jobs, rt = _jobs(w)
    w.ctl.add_fault("/v1.0/applications", status=429, count=1, retry_after=120)  # Graph's Retry-After
    assert w.run("secret_expiry").retry_after_s == 120
    state = rt.store.checks.get_state("subject", "secret_expiry")
    assert state.not_before is not None and state.not_before > datetime.now(UTC) + timedelta(seconds=100)
    due = datetime.now(UTC) + timedelta(seconds=1)  # due after the stored result: only the wait holds it
    assert asyncio.run(jobs.run("subject", "secret_expiry", due.isoformat())) == "deferred"
    assert len(rt.store.checks.results("subject", "secret_expiry")) == 1
    assert jobs.slots.held == 0


def test_a_check_no_longer_configured_is_skipped(world):
    w = world("app")
    jobs, rt = _jobs(w, NoSlots())
    now = datetime.now(UTC).isoformat()
    assert asyncio.run(jobs.run("removed-integration", "token", now)) == "gone"
    assert asyncio.run(jobs.run("subject", "imap", now)) == "gone"  # not one of its checks
    assert rt.store.checks.results("subject") == []
    assert jobs.counts.gone == 2


class OtherRunMeanwhile:
    """The pair's slot is held by another run of the same check (the first run of a job the leader ran again): it
    stores its result while this job waits for the slot."""

    def __init__(self, w):
        self.w = w

    async def acquire(self, needs, *, timeout):
        await asyncio.to_thread(self.w.run, "token")
        return object()

    async def release(self, held):
        pass


def test_a_result_stored_while_the_job_waited_for_its_slot_is_not_taken_again(world):
    w = world("app")
    rt = w.runtime or w.open()
    due = datetime.now(UTC)
    jobs = CheckJobs(lambda: rt, OtherRunMeanwhile(w), enqueuer=None)  # type: ignore[arg-type]
    assert asyncio.run(jobs.run("subject", "token", due.isoformat())) == "fresh"
    assert len(rt.store.checks.results("subject", "token")) == 1  # the other run's, not a second


def test_worker_lost_is_not_recorded_over_a_result_stored_for_the_due_time(world):
    """A job lost twice whose second run stored its result before its worker died: no worker_lost error after it
    (it would follow a good result with an error, and could page)."""
    from mailwarden.monitor.scheduler import Monitor

    w = world("app")
    rt = w.runtime or w.open()
    monitor = Monitor(rt)
    due = datetime.now(UTC)
    w.run("token")
    asyncio.run(monitor._lost("subject", "token", due.isoformat()))
    assert [r.code for r in rt.store.checks.results("subject", "token")] == [None]
    later = datetime.now(UTC) + timedelta(seconds=1)  # due after the stored result: nothing covers it
    asyncio.run(monitor._lost("subject", "token", later.isoformat()))
    assert sorted(str(r.code) for r in rt.store.checks.results("subject", "token")) == ["None", "worker_lost"]


def test_a_failing_token_check_still_blocks_the_mailbox_checks_in_an_outage_in_queue_mode(world):
    """Queue mode reads a dependency's state from the store (another worker may have run it); while the store
    cannot be read, what this process last saw of it still blocks the mailbox checks, as in local mode."""
    from mailwarden.monitor.buffer import ResultBuffer

    w = world("app", checks={"token": {}, "imap": {}})
    rt = w.runtime or w.open()
    rt.runner.remembers = False  # as open_runtime sets it in queue mode
    w.ctl.expire_secret(w.app_id, w.key_id)
    assert w.run("token").code == "secret_expired"
    rt.runner.pipeline.buffer = buffer = ResultBuffer()
    buffer.unavailable("the database is down (the test)")
    outcome = w.run("imap")
    assert (outcome.status.value, outcome.code) == ("blocked", "blocked_by_token")



def test_a_token_check_failing_on_another_worker_blocks_the_mailbox_check(world):
    """The job reads its dependencies' states with its own, once its slots are held: a token check another worker
    ran (this process never saw it) blocks the mailbox check while it fails, and not before."""
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.runtime import open_runtime

    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks={"token": {}, "imap": {}})
    jobs, rt = _jobs(w)
    rt.runner.remembers = False  # as open_runtime sets it in queue mode
    other = open_runtime(config_mod.load(w.config_path))  # another worker, on the same database
    try:
        other.runner.remembers = False
        assert asyncio.run(other.runner.run_one("subject", "token")).outcome.status.value == "ok"
        assert asyncio.run(jobs.run("subject", "imap", datetime.now(UTC).isoformat())) == "ran"
        assert rt.store.checks.get_state("subject", "imap").last_code != "blocked_by_token"
        w.ctl.expire_secret(w.app_id, w.key_id)
        assert asyncio.run(other.runner.run_one("subject", "token")).outcome.code == "secret_expired"
        assert asyncio.run(jobs.run("subject", "imap", datetime.now(UTC).isoformat())) == "ran"
        assert rt.store.checks.get_state("subject", "imap").last_code == "blocked_by_token"
    finally:
        other.close()


def test_queue_statistics_that_cannot_be_refreshed_are_a_warning_not_a_database_outage(world, monkeypatch, caplog):
    """The leader's ANALYZE of the jobs table failing (or refused: not the table's owner) must not put results in the
    outage buffer, and a refusal is said once, not at every heartbeat."""
    import logging

    from sqlalchemy.exc import ProgrammingError

    from mailwarden.monitor import scheduler as scheduler_mod

    w = world("app")
    monitor = scheduler_mod.Monitor(w.runtime or w.open())

    def failing(engine):
        raise ProgrammingError("ANALYZE procrastinate.procrastinate_jobs", {}, Exception("permission denied"))

    caplog.set_level(logging.INFO, logger="mailwarden.scheduler")
    monkeypatch.setattr(scheduler_mod, "refresh_planner_stats", failing)
    asyncio.run(monitor._guarded("queue statistics", monitor._refresh_planner_stats))
    assert not monitor.buffer.outage
    monkeypatch.setattr(scheduler_mod, "refresh_planner_stats", lambda engine: (0, 30000, 0))  # ANALYZE did nothing
    for _ in range(3):
        asyncio.run(monitor._guarded("queue statistics", monitor._refresh_planner_stats))
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("queue statistics not refreshed") == 1
    assert sum(m.startswith("queue statistics not refreshed: ANALYZE changed nothing") for m in messages) == 1
    assert "queue statistics refreshed" not in messages
