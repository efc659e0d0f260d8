"""The scheduler: one jittered, coalesced job per (integration, check) at the integration's interval; paused
integrations are not run; throttled checks wait for Retry-After; a reload swaps the job set or keeps the old
one; a failing job stops nothing; `mailwarden serve` logs JSON, reloads on SIGHUP and stops on SIGTERM.

APScheduler reads the wall clock: the clock is moved with time-machine and the scheduler woken with
wakeup(). The only waits are bounded polls for work already due to finish, never for a schedule.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from pydantic import BaseModel

from mailwarden import checks
from mailwarden.checks.base import NoOptions, Outcome, Status
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import AHEAD, Monitor, job_id

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
MAILWARDEN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mailwarden"


class Scripted:
    """A check kind whose outcomes a test sets, standing for any real kind."""

    config_model: ClassVar[type[BaseModel]] = NoOptions
    # the declarations of checks.base.Check: a scripted kind asks for no token and talks to no server
    needs: ClassVar[dict] = {}
    uses_app_token: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    def __init__(self, kind: str):
        self.kind = kind
        self.depends_on: tuple[str, ...] = ()  # ("token",): blocked by the token check, as the mailbox kinds are
        self.script: dict[str, list[object]] = {}  # integration -> outcomes to return, in order; then ok
        self.calls: list[str] = []

    async def run(self, ctx):
        name = ctx.integration.name
        self.calls.append(name)
        queue = self.script.get(name) or []
        action = queue.pop(0) if queue else "ok"
        if action == "raise":
            raise RuntimeError("scripted crash")
        if isinstance(action, Outcome):
            return action
        return Outcome.ok("scripted ok")


@pytest.fixture
def kinds(monkeypatch):
    token, mail = Scripted("token"), Scripted("mail_test")
    registry = dict(checks.REGISTRY)
    registry.update({"token": token, "mail_test": mail})
    monkeypatch.setattr(checks, "REGISTRY", registry)
    import mailwarden.monitor.runner as runner_mod

    monkeypatch.setattr(runner_mod, "REGISTRY", registry)
    return token, mail


def integ(name: str, **extra: object) -> str:
    fields = {"name": name, "app": "a", "flow": "app", "mailbox": f"{name}@contoso.com",
              "checks": "[token, mail_test]", **extra}
    return "  - {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"


def write_config(path: Path, *integrations: str, interval: str = "60s") -> Path:
    path.write_text(textwrap.dedent(f"""\
        defaults: {{interval: {interval}, timeout: 2s, failure_threshold: 1}}
        tenants: {{t: {{tenant_id: 11111111-2222-3333-4444-555555555555}}}}
        apps: {{a: {{tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:X}}}}
        integrations:
        """) + "".join(integrations))
    return path


# Housekeeping jobs (alert dispatch, history rollups, the secrets cycle) have their own tests: only the
# per-check jobs count here.
HOUSEKEEPING = ("alerts::", "history::", "secrets::")


def housekeeping(jid: str | None) -> bool:
    return bool(jid) and jid.startswith(HOUSEKEEPING)


class Clock:
    """The frozen wall clock APScheduler and the store read, and the running Monitor it drives."""

    def __init__(self, traveller, monitor: Monitor):
        self.traveller = traveller
        self.monitor = monitor
        self.events: list[tuple[int, str]] = []
        monitor.scheduler.add_listener(lambda e: housekeeping(e.job_id) or self.events.append((e.code, e.job_id)),
                                       EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
                                       | EVENT_JOB_MAX_INSTANCES)

    def executed(self, jid: str) -> int:
        return self.events.count((EVENT_JOB_EXECUTED, jid))

    async def step(self, seconds: float, expect: dict[str, int], timeout: float = 5.0) -> None:
        """Set the clock to T0 + seconds, wake the scheduler, wait until each job in ``expect`` has
        finished that many runs in total (the wait is for the work, bounded; the schedule is the clock)."""
        self.traveller.move_to(T0 + timedelta(seconds=seconds))
        self.monitor.scheduler.wakeup()
        deadline = time.monotonic() + timeout
        while any(self.executed(j) < n for j, n in expect.items()):
            if time.monotonic() > deadline:
                got = {j: self.executed(j) for j in expect}
                raise AssertionError(f"jobs did not run at T0+{seconds}s: expected {expect}, got {got}")
            await asyncio.sleep(0.01)
        # a job's run puts its check in line (monitor.line): the check has run once the line is empty and idle
        while len(self.monitor.line) or self.monitor.line.running:
            if time.monotonic() > deadline:
                raise AssertionError(f"checks still in line or running at T0+{seconds}s")
            await asyncio.sleep(0.01)
        assert {j: self.executed(j) for j in expect} == expect, "a job ran more than once in one interval"
        assert not [e for e in self.events if e[0] != EVENT_JOB_EXECUTED], self.events
        now = T0 + timedelta(seconds=seconds)
        # Nothing else is due at this clock time, so no further run can appear later.
        assert all(j.next_run_time > now for j in self.monitor.scheduler.get_jobs() if not housekeeping(j.id))


@pytest.fixture
async def running(tmp_path, kinds):
    """Start a Monitor on the config at tmp_path/mailwarden.yaml (written by the test first) at T0."""
    started: list[Monitor] = []

    async def start(config_path: Path) -> Clock:
        traveller = time_machine.travel(T0, tick=False)
        stack.append(traveller)
        t = traveller.start()
        runtime = open_runtime(config_mod.load(config_path))
        monitor = Monitor(runtime, config_path)
        started.append(monitor)
        clock = Clock(t, monitor)
        monitor.start()
        return clock

    stack: list = []
    yield start
    for monitor in started:
        monitor.shutdown()
    await asyncio.sleep(0.01)  # the AsyncIOScheduler shuts down on the loop
    for traveller in stack:
        traveller.stop()


def count(store, name: str, kind: str) -> int:
    return len(store.checks.results(name, kind))


# -- the job set --------------------------------------------------------------------------------------------
async def test_one_job_per_integration_and_check_at_its_interval(tmp_path, running, kinds):
    kinds[1].depends_on = ("token",)  # the mail check declares it uses the token check's token, as a mailbox kind does
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("plain"), integ("slow", interval="5m"),
                       integ("resting", paused="true"))
    clock = await running(cfg)
    sched = clock.monitor.scheduler
    jobs = {j.id: j for j in sched.get_jobs() if not housekeeping(j.id)}
    assert set(jobs) == {job_id(n, k) for n in ("plain", "slow") for k in ("token", "mail_test")}
    for jid, job in jobs.items():
        interval = 300 if jid.startswith("slow") else 60
        assert job.trigger.interval == timedelta(seconds=interval), jid
        assert 0 < job.trigger.jitter <= interval * 0.1, jid
        assert job.coalesce is True and job.max_instances == 1, jid
        # first run soon after start, the check the others depend on (the token check) before them
        delay = (job.next_run_time - T0).total_seconds()
        assert (0 <= delay <= 2) if jid.endswith("::token") else (3 <= delay <= 6), (jid, delay)

    store = clock.monitor.runtime.store
    assert {s.check: s.status for s in store.checks.states("resting")} == {"token": "paused", "mail_test": "paused"}

    # every job runs, the paused integration never
    await clock.step(10, {jid: 1 for jid in jobs})
    assert count(store, "resting", "token") == count(store, "resting", "mail_test") == 0
    assert {s.check: s.status for s in store.checks.states("resting")} == {"token": "paused", "mail_test": "paused"}


async def test_jobs_run_once_per_interval_and_store_results(tmp_path, running, kinds):
    token, mail = kinds
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"), integ("i1"))
    clock = await running(cfg)
    store = clock.monitor.runtime.store
    pairs = [(n, k) for n in ("i0", "i1") for k in ("token", "mail_test")]

    # first runs fall within T0..T0+6 s; the next ones within 60..66 s after those
    for n, at in ((1, 10), (2, 80), (3, 150)):
        await clock.step(at, {job_id(i, k): n for i, k in pairs})
        for i, k in pairs:
            results = store.checks.results(i, k)
            assert len(results) == n, (i, k, at)
            assert results[0].status == "ok"
            assert results[0].checked_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=at)
    assert sorted(token.calls) == sorted(mail.calls) == ["i0"] * 3 + ["i1"] * 3
    assert {s.status for s in store.checks.states()} == {"ok"}


async def test_a_restart_continues_from_the_stored_last_runs(tmp_path, running, kinds):
    """After a restart (or a takeover by another instance) each check runs when it is next due after its last
    stored run, not at once: no check runs twice in one interval, and a never-run check starts at once."""
    kinds[1].depends_on = ("token",)
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"), integ("i1"))
    clock = await running(cfg)
    pairs = [(n, k) for n in ("i0", "i1") for k in ("token", "mail_test")]
    await clock.step(10, {job_id(i, k): 1 for i, k in pairs})  # every check ran once at T0+10 s
    clock.monitor.shutdown()
    await asyncio.sleep(0.01)

    write_config(tmp_path / "mailwarden.yaml", integ("i0"), integ("i1"), integ("fresh"))
    clock.traveller.move_to(T0 + timedelta(seconds=30))  # restarted 20 s after those runs
    restarted = Monitor(open_runtime(config_mod.load(cfg)), cfg)
    restarted.sync_jobs(first=True)
    due = {j.id: (j.next_run_time - T0).total_seconds() for j in restarted.scheduler.get_jobs()
           if not housekeeping(j.id)}
    for i, k in pairs:
        assert due[job_id(i, k)] == pytest.approx(70, abs=0.01), (i, k)  # last run + the 60 s interval
    assert 30 <= due[job_id("fresh", "token")] <= 32 and 33 <= due[job_id("fresh", "mail_test")] <= 36

    clock.traveller.move_to(T0 + timedelta(seconds=600))  # down for longer than an interval: due at once
    late = Monitor(open_runtime(config_mod.load(cfg)), cfg)
    late.sync_jobs(first=True)
    assert all(0 <= (j.next_run_time - T0).total_seconds() - 600 <= 6 for j in late.scheduler.get_jobs()
               if not housekeeping(j.id))


async def test_a_restart_keeps_the_stored_token_failure_and_retry_after(tmp_path, running, kinds, monkeypatch):
    """What the store says about each check before a restart holds on its first run after it: a mailbox check
    whose token check was failing is blocked (not run against the mailbox), and a throttled check waits for
    its stored Retry-After. The scheduler learns this in one read at start, not a state read per check."""
    token, mail = kinds
    mail.depends_on = ("token",)
    token.script["i0"] = [Outcome(Status.FAIL, "invalid_client", "AADSTS7000222: the client secret expired")]
    mail.script["i1"] = [Outcome(Status.WARN, "throttled", "429 Too Many Requests", retry_after_s=600)]
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"), integ("i1"))
    clock = await running(cfg)
    pairs = [(n, k) for n in ("i0", "i1") for k in ("token", "mail_test")]
    await clock.step(10, {job_id(i, k): 1 for i, k in pairs})
    assert clock.monitor.runtime.store.checks.get_state("i0", "token").last_status == "fail"
    clock.monitor.shutdown()
    await asyncio.sleep(0.01)

    clock.traveller.move_to(T0 + timedelta(seconds=75))  # restarted: every check is due again
    token.script["i0"] = [Outcome(Status.FAIL, "invalid_client", "AADSTS7000222: the client secret expired")]
    restarted = Monitor(open_runtime(config_mod.load(cfg)), cfg)
    store = restarted.runtime.store
    reads: list[tuple[str, str]] = []
    real_get_state = store.checks.get_state
    monkeypatch.setattr(store.checks, "get_state", lambda n, k: reads.append((n, k)) or real_get_state(n, k))
    restarted.sync_jobs(first=True)
    mail.calls.clear()
    await restarted._run_local("i0", "mail_test")  # before i0's token check runs again
    await restarted._run_local("i1", "mail_test")  # 65 s after a Retry-After of 600 s
    assert mail.calls == []
    assert [r.code for r in store.checks.results("i0", "mail_test")][:1] == ["blocked_by_token"]
    assert count(store, "i1", "mail_test") == 1  # deferred: no second result
    assert reads == []
    restarted.shutdown()


async def test_throttled_check_waits_until_not_before(tmp_path, running, kinds, caplog):
    token, _ = kinds
    token.script["i0"] = [Outcome(Status.WARN, "throttled", "429 Too Many Requests", retry_after_s=150)]
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0", checks="[token]"))
    clock = await running(cfg)
    store = clock.monitor.runtime.store
    jid = job_id("i0", "token")
    caplog.set_level(logging.INFO, logger="mailwarden.scheduler")

    await clock.step(10, {jid: 1})
    state = store.checks.get_state("i0", "token")
    assert state.last_code == "throttled"
    assert state.not_before.replace(tzinfo=UTC) == T0 + timedelta(seconds=160)

    # the next fire (T0+60..72) is before not_before: the job runs but the check does not
    await clock.step(80, {jid: 2})
    assert token.calls == ["i0"] and count(store, "i0", "token") == 1
    assert [r.getMessage() for r in caplog.records if r.name == "mailwarden.scheduler"
            and getattr(r, "integration", None) == "i0"] == ["check deferred (Retry-After)"]

    # the fire after not_before (T0+180..204) runs the check again
    await clock.step(210, {jid: 3})
    assert token.calls == ["i0", "i0"] and count(store, "i0", "token") == 2
    state = store.checks.get_state("i0", "token")
    assert state.last_status == "ok" and state.not_before is None


async def test_reload_swaps_the_job_set(tmp_path, running, caplog):
    path = tmp_path / "mailwarden.yaml"
    write_config(path, integ("keep"), integ("change"), integ("gone"))
    clock = await running(path)
    monitor = clock.monitor
    sched = monitor.scheduler
    keep_next = sched.get_job(job_id("keep", "token")).next_run_time
    caplog.set_level(logging.INFO, logger="mailwarden.scheduler")

    write_config(path, integ("keep"), integ("change", interval="2m"), integ("new"))
    assert monitor.reload() is True
    assert {j.id for j in sched.get_jobs() if not housekeeping(j.id)} == {
        job_id(n, k) for n in ("keep", "change", "new") for k in ("token", "mail_test")}
    changed = sched.get_job(job_id("change", "token"))
    assert changed.trigger.interval == timedelta(minutes=2)
    assert changed.next_run_time == T0 + timedelta(minutes=2)  # rescheduled: next run one new interval on
    assert sched.get_job(job_id("keep", "token")).trigger.interval == timedelta(seconds=60)
    assert sched.get_job(job_id("keep", "token")).next_run_time == keep_next  # unchanged: not rescheduled
    assert sched.get_job(job_id("new", "token")).next_run_time <= T0 + timedelta(seconds=6)
    assert "config reloaded" in caplog.messages

    store = monitor.runtime.store
    rows = {i.name: i for i in store.inventory.integrations(include_removed=True)}
    assert rows["gone"].removed_at is not None
    assert all(rows[n].removed_at is None for n in ("keep", "change", "new"))
    assert "gone" not in {i.name for i in store.inventory.integrations()}

    # the new schedule runs: the added integration is checked, the removed one is not
    await clock.step(10, {job_id(n, k): 1 for n in ("keep", "new") for k in ("token", "mail_test")})
    assert count(store, "new", "token") == 1 and count(store, "gone", "token") == 0

    # an unusable config keeps the running schedule
    before = {j.id: (j.trigger.interval, j.next_run_time) for j in sched.get_jobs()}
    runtime = monitor.runtime
    caplog.clear()
    path.write_text("integrations: [\n")
    assert monitor.reload() is False
    assert {j.id: (j.trigger.interval, j.next_run_time) for j in sched.get_jobs()} == before
    assert monitor.runtime is runtime
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["config reload failed; keeping the running schedule"]
    assert "malformed YAML" in errors[0].error
    # and keeps running it: keep and new every 60 s (3rd fire T0+120..138), change from T0+120
    kinds = ("token", "mail_test")
    await clock.step(80, {job_id(n, k): 2 for n in ("keep", "new") for k in kinds}
                     | {job_id("change", k): 0 for k in kinds})
    await clock.step(140, {job_id(n, k): 3 for n in ("keep", "new") for k in kinds}
                     | {job_id("change", k): 1 for k in kinds})
    assert count(store, "change", "token") == 1 and count(store, "gone", "token") == 0


async def test_a_failing_job_does_not_stop_the_others(tmp_path, running, kinds, caplog):
    token, _ = kinds
    token.script["crash"] = ["raise", "raise"]
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("crash"), integ("broken"), integ("fine"))
    clock = await running(cfg)
    monitor = clock.monitor
    store = monitor.runtime.store
    # Something outside the check itself fails for "broken" (as a storage error would).
    run_one = monitor.runtime.runner.run_one

    async def flaky(name, kind):
        if name == "broken":
            raise RuntimeError("storage hiccup")
        return await run_one(name, kind)

    monitor.runtime.runner.run_one = flaky
    every = {job_id(n, k): 1 for n in ("crash", "broken", "fine") for k in ("token", "mail_test")}
    await clock.step(10, every)
    await clock.step(80, {j: 2 for j in every})
    assert monitor.scheduler.running
    assert [r.status for r in store.checks.results("crash", "token")] == ["error", "error"]
    assert store.checks.results("crash", "token")[0].code == "unclassified"
    assert count(store, "crash", "mail_test") == 2 and count(store, "fine", "token") == 2
    assert count(store, "broken", "token") == 0
    failed = [r for r in caplog.records if r.getMessage() == "check job failed"]
    assert len(failed) == 4 and {r.integration for r in failed} == {"broken"}


# -- `mailwarden serve` as a process ----------------------------------------------------------------------
SECRET = "Zq8~canary-secret-value-4f1e9d"  # noqa: S105 - a recognisable fake secret


def serve_config(path: Path, names: list[str]) -> Path:
    integrations = "".join(
        f"  - {{name: {n}, app: a, flow: app, mailbox: {n}@contoso.com, checks: [token]}}\n" for n in names)
    path.write_text(textwrap.dedent("""\
        database: sqlite:///serve.db
        cloud: custom
        endpoints:
          authority: https://127.0.0.1:9
          graph: https://127.0.0.1:9/v1.0
        defaults: {interval: 2s, timeout: 2s}
        tenants: {t: {tenant_id: 11111111-2222-3333-4444-555555555555}}
        apps: {a: {tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_TEST_SECRET}}
        integrations:
        """) + integrations)
    return path


def serve_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")}
    env["MW_TEST_SECRET"] = SECRET
    return env


def log_lines(path: Path) -> list[dict]:
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # the last line may still be being written
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(path: Path, pred, what: str, proc: subprocess.Popen, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = log_lines(path)
        if pred(lines):
            return lines
        if proc.poll() is not None:
            raise AssertionError(f"serve exited ({proc.returncode}) before {what}:\n{path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{path.read_text()[-3000:]}")
        time.sleep(0.05)


def test_serve_logs_json_reloads_on_sighup_and_stops_on_sigterm(tmp_path):
    cfg = serve_config(tmp_path / "mailwarden.yaml", ["keep", "drop"])
    err, out = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with err.open("w") as ferr, out.open("w") as fout:
        proc = subprocess.Popen([str(MAILWARDEN), "serve", "-c", str(cfg)], cwd=tmp_path, env=serve_env(),
                                stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
    try:
        def finished(lines, names):
            return {ln.get("integration") for ln in lines if ln["msg"] == "check finished"} >= names

        lines = wait_for(err, lambda ls: finished(ls, {"keep", "drop"}), "a check of each integration", proc)
        done = [ln for ln in lines if ln["msg"] == "check finished"]
        # nothing listens on 127.0.0.1:9: the token check reports no answer, and nothing crashed
        # (a login host that cannot be reached is one cause: idp_unreachable)
        assert {(ln["check"], ln["status"], ln["code"]) for ln in done} == {("token", "error", "idp_unreachable")}
        assert all({"ts", "level", "logger"} <= set(ln) for ln in lines)

        serve_config(cfg, ["keep"])
        proc.send_signal(signal.SIGHUP)
        lines = wait_for(err, lambda ls: any(ln["msg"] == "config reloaded" for ln in ls), "the reload", proc)
        reloaded = next(ln for ln in lines if ln["msg"] == "config reloaded")
        assert reloaded["integrations"] == 1 and reloaded["jobs"] >= 1  # keep::token (+ housekeeping jobs)
        assert any(ln["msg"] == "check unscheduled" and ln["job"] == "drop::token" for ln in lines)
        # the schedule goes on after the reload
        n = len(lines)
        wait_for(err, lambda ls: any(ln["msg"] == "check finished" and ln["integration"] == "keep"
                                     for ln in ls[n:]), "a check after the reload", proc)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    text = err.read_text() + out.read_text()
    assert SECRET not in text
    assert "Traceback" not in text
    log_lines(err)  # every line is JSON


def test_serve_with_a_bad_config_exits_3_with_one_paragraph(tmp_path):
    cfg = tmp_path / "mailwarden.yaml"
    serve_config(cfg, ["keep"])
    cfg.write_text(cfg.read_text().replace("app: a,", "app: nosuch,"))
    proc = subprocess.run([str(MAILWARDEN), "serve", "-c", str(cfg)], cwd=tmp_path, env=serve_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stderr.startswith("mailwarden: ") and "nosuch" in proc.stderr
    assert "Traceback" not in proc.stderr and "\n\n" not in proc.stderr.strip()
    assert proc.stdout == ""


async def test_first_runs_follow_the_declared_dependencies_not_the_name(tmp_path, running, kinds):
    """Nothing depends on the token check here: it is spread with the others (3-6 s), not started first by its
    name; a check that others declare they depend on starts first (0-2 s), whatever it is called."""
    token, mail = kinds
    token.depends_on = ("mail_test",)  # the other way round: the token check waits for mail_test
    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    clock = await running(cfg)
    due = {j.id: (j.next_run_time - T0).total_seconds() for j in clock.monitor.scheduler.get_jobs()
           if not housekeeping(j.id)}
    assert 0 <= due[job_id("i0", "mail_test")] <= 2 and 3 <= due[job_id("i0", "token")] <= 6, due


async def _started(monitor, func, job_id: str, caplog) -> None:
    """Add ``func`` as a job due now and wait until the scheduler has started it (APScheduler logs "Running job")."""
    monitor.scheduler.add_job(func, id=job_id, next_run_time=datetime.now(UTC))
    monitor.scheduler.wakeup()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if any("Running job" in r.getMessage() and func.__name__ in r.getMessage() for r in caplog.records):
            return


async def test_a_job_under_way_at_shutdown_ends_instead_of_being_cancelled(tmp_path, running, caplog):
    """SIGTERM while a job runs (an alert dispatch sending): `serve` drains the scheduler before shutting it down, so
    the job ends and no CancelledError traceback is logged as "raised an exception" (tests/ha asserts no traceback)."""
    import logging

    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    clock = await running(cfg)
    monitor = clock.monitor
    ended = []

    async def sending():
        await asyncio.sleep(0.3)
        ended.append(True)

    caplog.set_level(logging.INFO, logger="apscheduler")
    await _started(monitor, sending, "test::sending", caplog)
    await monitor.drain()
    monitor.shutdown()
    await asyncio.sleep(0.05)
    assert ended == [True]
    assert not [r for r in caplog.records if "raised an exception" in r.getMessage()]


async def test_a_long_job_cut_short_by_the_stop_is_said_once_without_a_traceback(tmp_path, running, caplog):
    """SIGTERM during a secrets cycle of 1,000 integrations (longer than the drain's wait; seen in bench --scale):
    the cycle is cancelled, and the log says so in one line rather than a CancelledError traceback."""
    import logging

    cfg = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    clock = await running(cfg)
    monitor = clock.monitor

    async def secrets_cycle():
        await asyncio.sleep(30)

    async def job():
        await monitor._guarded("secrets cycle", secrets_cycle)

    caplog.set_level(logging.INFO)
    await _started(monitor, job, "test::long", caplog)
    await monitor.drain(timeout=0.2)
    monitor.shutdown()
    await asyncio.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "raised an exception" in m]
    assert messages.count("secrets cycle cut short by the stop; it runs again after the next start") == 1


async def test_checks_due_together_wait_for_their_slot_as_entries_not_tasks(tmp_path, running, kinds):
    """A whole cycle due at once (a start, a takeover): each check waiting for a slot was a task inside the runner
    (about 35 objects every full garbage collection walked: 55-94 ms pauses at 1,000 integrations,
    bench/RESULTS.md). Now the jobs put them in line and only the checks holding a slot are tasks; all run, once."""
    token, _ = kinds
    gate = asyncio.Event()
    scripted_run = token.run

    async def held(ctx):
        await gate.wait()
        return await scripted_run(ctx)

    token.run = held
    path = write_config(tmp_path / "mailwarden.yaml", *(integ(f"i{n}", checks="[token]") for n in range(30)))
    path.write_text(path.read_text() + "concurrency: {total: 2, per_tenant: 2}\n")
    clock = await running(path)
    before = len(asyncio.all_tasks())
    clock.traveller.move_to(T0 + timedelta(seconds=10))
    clock.monitor.scheduler.wakeup()
    jobs = [job_id(f"i{n}", "token") for n in range(30)]
    deadline = time.monotonic() + 5
    while any(clock.executed(j) < 1 for j in jobs):  # every job has run: its check is in line or running
        assert time.monotonic() < deadline, "the jobs did not run"
        await asyncio.sleep(0.01)
    assert clock.monitor.line.running == 2 * AHEAD and len(clock.monitor.line) == 30 - 2 * AHEAD
    assert len(token.calls) == 0 and sum(1 for t in asyncio.all_tasks() if "held" in repr(t)) == 2  # the slots held
    # the checks started (each a task, and the two in their slot wait_for's) and a housekeeping job due now; 30 or
    # more tasks when each waiting check was one
    assert len(asyncio.all_tasks()) - before <= 2 * AHEAD + 2 + 1
    gate.set()
    while len(clock.monitor.line) or clock.monitor.line.running:
        assert time.monotonic() < deadline + 5, "the line did not empty"
        await asyncio.sleep(0.01)
    assert sorted(token.calls) == sorted(f"i{n}" for n in range(30))
