"""Queue mode (issue 20) on PostgreSQL: the leader enqueues, `mailwarden worker` processes run the checks.

What a user relies on, with exact counts: one job per due check (a second enqueue, or a new leader after a failover,
adds none); Microsoft's per-mailbox limit held across workers, measured by the sandbox (the most sessions a mailbox
had open at once); a worker SIGKILLed mid-check has its check run again once and stored once; a check whose worker is
lost twice is recorded as ``worker_lost`` and not run a third time; while the queue's database is down the leader
runs due checks itself and hands them back when it returns.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.ha.conftest import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

IMAP_APP = {"exchange": ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"]}


def app_mailbox(ids):
    return {"service_principals": [ids["app_id"]],
            "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["app_id"]]}]}


def _psql(url: str) -> psycopg.Connection:
    from mailwarden.monitor.leader import connect_params

    return psycopg.connect(**connect_params(url), autocommit=True)


def _jobs(url: str) -> list[tuple]:
    with _psql(url) as conn:
        return conn.execute("SELECT queueing_lock, status, attempts FROM procrastinate.procrastinate_jobs "
                            "ORDER BY id").fetchall()


def _results(url: str) -> list[tuple]:
    with _psql(url) as conn:
        return conn.execute('SELECT integration, "check", status, code FROM check_results ORDER BY id').fetchall()


def _migrate(url: str) -> None:
    from mailwarden.monitor.db import open_store

    open_store(url).close()


# -- enqueueing ----------------------------------------------------------------------------------------------------
def test_one_job_waits_per_check_whoever_enqueues(shared_pg_url):
    """The queueing lock: a check due again (or enqueued by a new leader after a failover) while its job still waits
    adds no job; a batch with such a pair still enqueues the others (procrastinate's own batch would insert none)."""
    from mailwarden.monitor.due import Due
    from mailwarden.monitor.queue import Enqueuer, make_app

    _migrate(shared_pg_url)
    now = datetime.now(UTC)

    async def go() -> tuple[list[str], list[str], list[str]]:
        leader, successor = make_app(shared_pg_url), make_app(shared_pg_url)
        async with leader.open_async(), successor.open_async():
            first = await Enqueuer(leader, shared_pg_url).enqueue([Due("a", "token", now, 10), Due("a", "imap", now)])
            again = await Enqueuer(leader, shared_pg_url).enqueue([Due("a", "imap", now), Due("b", "imap", now)])
            takeover = await Enqueuer(successor, shared_pg_url).enqueue(
                [Due("a", "token", now, 10), Due("a", "imap", now), Due("b", "imap", now)])
        return first, again, takeover

    first, again, takeover = asyncio.run(go())
    assert sorted(first) == ["a::imap", "a::token"]
    assert again == ["b::imap"]
    assert takeover == []
    jobs = _jobs(shared_pg_url)
    assert [j[0] for j in jobs] == ["a::token", "a::imap", "b::imap"]
    assert {j[1] for j in jobs} == {"todo"}


# -- the leader while the queue is down -------------------------------------------------------------------------------
def test_leader_runs_due_checks_itself_while_the_queue_is_down(cluster):
    """PostgreSQL stopped: the due checks run in the leader (local mode, with its outage buffer), not lost; once the
    database is back the leader hands them to the queue again."""
    from mailwarden.monitor.due import Due
    from mailwarden.monitor.queue import Feed, make_app

    _migrate(cluster.url)
    ran: list[tuple[str, str]] = []

    async def run_local(name: str, kind: str) -> None:
        ran.append((name, kind))

    async def go() -> tuple[bool, bool, bool, bool]:
        feed = Feed(make_app(cluster.url), cluster.url, run_local, window=0.05)
        now = datetime.now(UTC)
        try:
            assert feed.submit(Due("a", "token", now, 10))
            await asyncio.sleep(0.5)
            queued_while_up = not ran
            await asyncio.to_thread(cluster.stop)
            feed.submit(Due("a", "imap", now))
            feed.submit(Due("b", "imap", now))
            for _ in range(300):  # the pool notices within its timeout (10 s)
                if len(ran) == 2:
                    break
                await asyncio.sleep(0.1)
            down = not feed.healthy
            refused = not feed.submit(Due("c", "imap", now))  # while down: the caller runs it
            still_down = not await feed.probe()
            await asyncio.to_thread(cluster.start)
            for _ in range(150):
                if await feed.probe():
                    break
                await asyncio.sleep(0.1)
            assert feed.submit(Due("d", "imap", now))
            await asyncio.sleep(0.5)
            return queued_while_up, down and refused, still_down, feed.healthy
        finally:
            await feed.close()

    queued_while_up, refused_while_down, probe_failed_while_down, healthy_again = asyncio.run(go())
    assert queued_while_up
    assert sorted(ran) == [("a", "imap"), ("b", "imap")]  # the two submitted during the outage, each once
    assert refused_while_down and probe_failed_while_down
    assert healthy_again
    assert [j[0] for j in _jobs(cluster.url)] == ["a::token", "d::imap"]


def test_a_leader_starting_while_the_queue_s_database_is_unreachable_runs_its_checks_itself(caplog, monkeypatch):
    """The queue's pool never opens (PostgreSQL down when the leader starts: psycopg_pool waits for its first
    connection, 30 s by default, and raises PoolTimeout): the batch runs here, once; a second attempt opens a new
    pool rather than reusing the failed one (whose failure would otherwise come back as "pool closed" for good), and
    fails the same way, said once. The pool's wait is cut to 2 s here: the same path, quicker."""
    import functools

    import psycopg_pool

    from mailwarden.monitor.due import Due
    from mailwarden.monitor.queue import Feed, make_app

    monkeypatch.setattr(psycopg_pool.AsyncConnectionPool, "open",
                        functools.partialmethod(psycopg_pool.AsyncConnectionPool.open, timeout=2.0))

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    ran: list[tuple[str, str]] = []

    async def run_local(name: str, kind: str) -> None:
        ran.append((name, kind))

    async def go() -> tuple[bool, bool, str, bool]:
        feed = Feed(make_app(url), url, run_local, window=0.01)
        queued = feed.submit(Due("a", "token", datetime.now(UTC), 10))
        for _ in range(100):  # the pool's wait (2 s here)
            if ran:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        refused = not feed.submit(Due("b", "token", datetime.now(UTC)))  # down: the caller runs it
        again = ""
        try:
            await feed.open()  # a new pool, not the failed one
        except Exception as exc:  # noqa: BLE001 - what it raises is the point
            again = f"{type(exc).__name__}: {exc}"
        probed = await feed.probe()
        await feed.close()
        return queued, refused, again, probed

    with caplog.at_level("WARNING", logger="mailwarden.queue"):
        queued, refused, again, probed = asyncio.run(go())
    assert queued and refused and not probed
    assert ran == [("a", "token")]
    assert again.startswith("StorageError") and "unavailable" in again, again
    assert "closed" not in again.split("unavailable", 1)[1], again  # the error of a new attempt, not "pool closed"
    downs = [r for r in caplog.records if r.getMessage().startswith("job queue unavailable")]
    assert len(downs) == 1


# -- workers on the sandbox -------------------------------------------------------------------------------------------
def _queue_world(world, pg_url: str, *, integrations: int, checks: dict, interval: str = "600s",
                 per_mailbox: int = 2, workerless_after: int = 60) -> Path:
    w = world("app", app_permissions=IMAP_APP, exchange=app_mailbox, checks=checks)
    doc = yaml.safe_load(w.config_path.read_text())
    doc["database"] = pg_url
    doc["token_key"] = "env:MW_TOKEN_KEY"
    doc["web"] = {"enabled": False}
    doc["defaults"].update(interval=interval, timeout="20s")
    doc["execution"] = {"mode": "queue", "queue": {"heartbeat": 1, "stalled_after": 3,
                                                   "workerless_after": workerless_after,
                                                   "limits": {"per_mailbox": per_mailbox}}}
    first = doc["integrations"][0]
    doc["integrations"] = [dict(copy.deepcopy(first), name=f"desk{i}") for i in range(integrations)]
    w.config_path.write_text(yaml.safe_dump(doc))
    w.extra["mailbox"] = first["mailbox"].lower()
    return w.config_path


def _wait(pred, what: str, timeout: float, *procs) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{p.name} exited ({p.proc.returncode}) before {what}:\n"
                                     f"{p.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log.read_text()[-2000:]}" for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)


def test_two_workers_hold_the_per_mailbox_limit(world, sandbox, shared_pg_url, serve):
    """Four integrations of one mailbox, IMAP, POP and SMTP each, on two workers of six checks at once: the sandbox
    never saw more than per_mailbox (2) sessions open on the mailbox at once (without the shared mailbox slots the
    three protocols run at once: 3), one per protocol, and every check ran exactly once."""
    kinds = ("imap", "pop", "smtp")
    config = _queue_world(world, shared_pg_url, integrations=4, checks={"token": {}, **{k: {} for k in kinds}})
    mailbox = yaml.safe_load(config.read_text())["integrations"][0]["mailbox"].lower()
    for kind in kinds:
        sandbox.control.set_protocol_fault(kind, "latency", latency_ms=300)
    try:
        sandbox.control.reset_stats()
        leader = serve(config, "leader", ("serve", "--no-worker"))
        leader.wait_for(lambda ls: any(x.get("msg") == "scheduler started" for x in ls), "the leader", 60)
        port = free_port()
        workers = [serve(config, f"worker{i}", ("worker", "--concurrency", "6", *(
            ("--listen", f"127.0.0.1:{port}") if i == 0 else ()))) for i in range(2)]
        _wait(lambda: len(_results(shared_pg_url)) >= 16, "16 results", 120, leader, *workers)
        time.sleep(1.0)
        peak = sandbox.control.stats()["sessions_peak"].get(mailbox)
        metrics = _get(port, "/metrics")
    finally:
        for kind in kinds:
            sandbox.control.set_protocol_fault(kind, "none")
    results = _results(shared_pg_url)
    assert sorted((r[0], r[1]) for r in results) == sorted(
        (f"desk{i}", k) for i in range(4) for k in ("token", *kinds))
    assert {r[2] for r in results} == {"ok"}, results
    assert peak == 2, f"at most 2 sessions on {mailbox} at once (and the limit was reached), saw {peak}"
    ran = [ln for w in workers for ln in w.msgs("check finished")]
    assert len(ran) == 16 and {w.name for w in workers if w.msgs("check finished")} == {"worker0", "worker1"}
    # worker0's own /metrics counts the checks it ran, as its log does
    assert f'mailwarden_worker_jobs_total{{outcome="ran"}} {float(len(workers[0].msgs("check finished")))}' in metrics


def test_with_no_live_worker_the_leader_runs_the_checks_itself(world, sandbox, shared_pg_url, serve):
    """`serve --no-worker` with no worker running: nothing would take the queued checks, and nothing would say so.
    After workerless_after (2 s) with no live worker the leader takes the waiting jobs off the queue and runs them, and
    every due check after them: each of the 6 checks is stored once, by the leader, none left queued. A worker
    started then is seen at the leader's next heartbeat and takes the due checks from there on."""
    config = _queue_world(world, shared_pg_url, integrations=3, checks={"token": {}, "imap": {}}, interval="12s",
                          workerless_after=2)
    leader = serve(config, "leader", ("serve", "--no-worker"))
    leader.wait_for(lambda ls: any(x.get("msg") == "scheduler started" for x in ls), "the leader", 60)
    pairs = sorted((f"desk{i}", k) for i in range(3) for k in ("token", "imap"))
    _wait(lambda: {(r[0], r[1]) for r in _results(shared_pg_url)} == set(pairs), "a result of each check", 60, leader)
    first = _results(shared_pg_url)[:6]
    assert sorted((r[0], r[1]) for r in first) == pairs  # each once: none run twice
    assert {r[2] for r in first} == {"ok"}, first
    assert [j for j in _jobs(shared_pg_url) if j[1] in ("todo", "doing")] == []
    said = leader.msgs("no mailwarden worker is live: the leader runs due checks itself until one is (start "
                       "`mailwarden worker` processes, or `serve` without --no-worker)")
    assert len(said) == 1 and said[0]["taken_from_queue"] >= 1, said  # the token checks were queued before it

    worker = serve(config, "worker", ("worker", "--concurrency", "4"))
    back = leader.wait_for(lambda ls: [x for x in ls if x.get("msg") == "a worker is live again: due checks go to "
                                       "the workers"], "the leader to see the worker", 60)
    _wait(lambda: len(worker.msgs("check finished")) >= 2, "checks run by the worker", 60, leader, worker)
    since = datetime.fromisoformat(back[0]["ts"]) + timedelta(seconds=3)  # checks under way then may finish
    late = [m for m in leader.msgs("check finished") if datetime.fromisoformat(m["ts"]) > since]
    assert late == [], "once a worker is live the checks are the workers' again"


def _doing(url: str) -> list[tuple]:
    return [j for j in _jobs(url) if j[1] == "doing"]


@pytest.mark.fresh_sandbox("IMAP latency of seconds while workers are killed: another test's IMAP would crawl")
def test_a_killed_worker_s_check_runs_again_once_and_a_twice_lost_one_is_worker_lost(world, sandbox, shared_pg_url,
                                                                                       serve):
    """SIGKILL a worker mid-check: its job is seen stalled (heartbeat 1 s, stalled after 3 s), run again once by
    another worker, and its result stored once. Kill that worker too, mid-check: the job is not run a third time,
    the check is recorded once as error/worker_lost, and no job of it is left."""
    config = _queue_world(world, shared_pg_url, integrations=2, checks={"token": {}, "imap": {}})
    sandbox.control.set_protocol_fault("imap", "latency", latency_ms=2500)  # an IMAP check takes ~10 s
    leader = serve(config, "leader", ("serve", "--no-worker"))
    leader.wait_for(lambda ls: any(x.get("msg") == "scheduler started" for x in ls), "the leader", 60)
    first = serve(config, "worker-a", ("worker", "--concurrency", "4"))
    _wait(lambda: len([j for j in _doing(shared_pg_url) if j[0].endswith("::imap")]) == 2, "both IMAP checks running",
          60, leader, first)
    first.kill()
    second = serve(config, "worker-b", ("worker", "--concurrency", "4"))
    # the reaper (every heartbeat) puts both back: attempts 1, both picked up by the second worker
    _wait(lambda: len([j for j in _doing(shared_pg_url) if j[0].endswith("::imap") and j[2] == 1]) == 2,
          "both retried jobs running", 60, leader, second)
    second.kill()  # mid-check again (an IMAP check takes ~10 s): both jobs are lost twice
    third = serve(config, "worker-c", ("worker", "--concurrency", "4"))
    _wait(lambda: len([r for r in _results(shared_pg_url) if r[1] == "imap"]) >= 2, "the two imap results", 60,
          leader, third)
    time.sleep(4.0)  # a third run, if any, would have started by now (stalled after 3 s, reaper every 1 s)
    sandbox.control.set_protocol_fault("imap", "none")
    imap = [r for r in _results(shared_pg_url) if r[1] == "imap"]
    assert sorted(imap) == [("desk0", "imap", "error", "worker_lost"), ("desk1", "imap", "error", "worker_lost")]
    assert [j for j in _jobs(shared_pg_url) if j[0].endswith("::imap") and j[1] in ("todo", "doing")] == []
    assert [m for m in third.msgs("check finished") if m.get("check") == "imap"] == []
    lost = leader.msgs("check job lost twice with its worker: recorded as worker_lost, not run again")
    assert sorted(m["integration"] for m in lost) == ["desk0", "desk1"]


@pytest.mark.fresh_sandbox("IMAP latency of seconds while a worker is killed: another test's IMAP would crawl")
def test_a_check_of_a_killed_worker_is_stored_once(world, sandbox, shared_pg_url, serve):
    """SIGKILL the worker mid-check; another worker runs it again and it is stored exactly once (one result per
    check for the one due time), with no job of it left waiting."""
    config = _queue_world(world, shared_pg_url, integrations=1, checks={"token": {}, "imap": {}})
    sandbox.control.set_protocol_fault("imap", "latency", latency_ms=1500)
    leader = serve(config, "leader", ("serve", "--no-worker"))
    leader.wait_for(lambda ls: any(x.get("msg") == "scheduler started" for x in ls), "the leader", 60)
    first = serve(config, "worker-a", ("worker", "--concurrency", "4"))
    _wait(lambda: [j for j in _doing(shared_pg_url) if j[0] == "desk0::imap"], "the IMAP check running", 60,
          leader, first)
    first.kill()
    second = serve(config, "worker-b", ("worker", "--concurrency", "4"))
    _wait(lambda: [r for r in _results(shared_pg_url) if r[1] == "imap"], "the imap result", 90, leader, second)
    time.sleep(4.0)
    sandbox.control.set_protocol_fault("imap", "none")
    results = _results(shared_pg_url)
    assert sorted(results) == [("desk0", "imap", "ok", None), ("desk0", "token", "ok", None)]
    assert [j for j in _jobs(shared_pg_url) if j[1] in ("todo", "doing")] == []
    assert leader.msgs("stalled check job run again: its worker stopped sending heartbeats")


def test_worker_refuses_local_mode(tmp_path):
    """`mailwarden worker` on a local-mode config: exit 3 with what to set."""
    import subprocess

    from tests.ha.conftest import MAILWARDEN, write_config

    config = write_config(tmp_path / "mailwarden.yaml", f"sqlite:///{tmp_path / 'db.sqlite'}", ["x"])
    proc = subprocess.run([str(MAILWARDEN), "worker", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "execution.mode: queue" in proc.stderr



def _get(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310 - local
        return r.read().decode()


def _health(port: int) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:  # noqa: S310 - local
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_postgresql_restarted_workers_and_leader_carry_on(cluster, tmp_path, serve):
    """PostgreSQL stopped mid-run and started again: the leader runs due checks itself meanwhile (their results wait
    in its buffer and are written when the database returns), the worker's /healthz says degraded, then unavailable
    (503) past stalled_after, and the worker starts taking checks again by itself once the database is back."""
    from tests.ha.conftest import write_config

    config = write_config(tmp_path / "mailwarden.yaml", cluster.url, ["x"], interval="2s")
    config.write_text(config.read_text() + "execution: {mode: queue, queue: {heartbeat: 1, stalled_after: 3}}\n")
    port = free_port()
    leader = serve(config, "leader", ("serve", "--no-worker"))
    leader.wait_for(lambda ls: any(x.get("msg") == "scheduler started" for x in ls), "the leader", 60)
    worker = serve(config, "worker", ("worker", "--listen", f"127.0.0.1:{port}"))
    worker.wait_for(lambda ls: ls and worker.msgs("check finished"), "a check on the worker", 60)
    assert _health(port)[0] == 200 and _health(port)[1]["status"] == "ok"
    ran_before = len(worker.msgs("check finished"))

    cluster.stop()
    seen = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and "unavailable" not in seen:
        seen.add(_health(port)[1]["status"])
        time.sleep(0.5)
    code, body = _health(port)
    assert code == 503 and body["status"] == "unavailable", body
    assert "degraded" in seen  # first, before stalled_after had passed
    leader.wait_for(lambda ls: leader.msgs("check finished"), "a check run by the leader itself", 30)
    assert leader.msgs("job queue unavailable: the leader runs due checks itself until it returns")

    cluster.start()
    worker.wait_for(lambda ls: len(worker.msgs("check finished")) > ran_before + 1, "checks on the worker again", 60)
    assert _health(port)[1]["status"] == "ok"
    assert worker.msgs("job queue reachable again: taking checks")
    assert worker.proc.poll() is None and leader.proc.poll() is None
    assert worker.stop() == 0
