"""A queue worker's job before it runs its check (monitor.worker.CheckJobs): a result already stored for the due time
is not taken again (the leader ran the check during a queue outage, or the job is run again after its worker was lost
once the first run had stored it); a check Microsoft asked to wait is not run; a check no longer configured is
skipped. None of these reach the check's mailbox or take a slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mailwarden.monitor.worker import CheckJobs


class NoSlots:
    """Fails the test if a job that must not run asks for a slot."""

    async def acquire(self, needs, *, timeout):
        raise AssertionError(f"a slot was asked for: {needs}")


def _jobs(w):
    rt = w.runtime or w.open()
    return CheckJobs(lambda: rt, NoSlots(), enqueuer=None), rt  # type: ignore[arg-type]


def test_a_result_stored_for_the_due_time_is_not_taken_again(world):
    w = world("app")
    jobs, rt = _jobs(w)
    due = datetime.now(UTC)
    w.run("token")
    before = len(rt.store.checks.results("subject", "token"))
    assert asyncio.run(jobs.run("subject", "token", due.isoformat(), job_id=7)) == "fresh"
    assert len(rt.store.checks.results("subject", "token")) == before == 1
    assert jobs.counts.fresh == 1


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


def test_a_check_no_longer_configured_is_skipped(world):
    w = world("app")
    jobs, rt = _jobs(w)
    now = datetime.now(UTC).isoformat()
    assert asyncio.run(jobs.run("removed-integration", "token", now)) == "gone"
    assert asyncio.run(jobs.run("subject", "imap", now)) == "gone"  # not one of its checks
    assert rt.store.checks.results("subject") == []
    assert jobs.counts.gone == 2
