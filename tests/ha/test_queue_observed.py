"""Queue mode seen from outside (issue 20, observability): /metrics gives the queue's depth per state, its lag (how
long the oldest ready check has waited) and the live workers; the overview's footer says the checks are falling
behind once that wait is longer than a check interval, and says nothing while it is not or in local mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from starlette.testclient import TestClient

pytestmark = pytest.mark.postgres

BEHIND = "Checks are falling behind"


def _app(tmp_path, url: str, mode: str, monkeypatch, **web):
    from cryptography.fernet import Fernet

    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.web.app import create_app
    from mailwarden.monitor.web.auth import Access

    monkeypatch.setenv("MW_QUEUE_KEY", Fernet.generate_key().decode())
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump({"database": url, "token_key": "env:MW_QUEUE_KEY",
                                    "web": {"base_url": "http://127.0.0.1:8080", "auth": "none", **web},
                                    "defaults": {"interval": "5m"}, "execution": {"mode": mode}}))
    cfg = config_mod.load(path)
    store = open_store(cfg.database_url())
    return create_app(cfg, store, access=Access(mode="none"))


def _client(tmp_path, url: str, mode: str, monkeypatch) -> TestClient:
    return TestClient(_app(tmp_path, url, mode, monkeypatch), base_url="http://127.0.0.1:8080")


def _enqueue(url: str, due: list) -> None:
    from mailwarden.monitor.queue import Enqueuer, make_app

    async def go() -> None:
        app = make_app(url)
        async with app.open_async():
            await Enqueuer(app, url).enqueue(due)
            await app.job_manager.register_worker()  # one live worker (its heartbeat is now)

    # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def _gauge(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def test_metrics_and_footer_show_the_queue_falling_behind(tmp_path, shared_pg_url, monkeypatch):
    from mailwarden.monitor.due import Due

    client = _client(tmp_path, shared_pg_url, "queue", monkeypatch)
    assert BEHIND not in client.get("/").text  # an empty queue: nothing to say
    now = datetime.now(UTC)
    _enqueue(shared_pg_url, [Due("a", "imap", now - timedelta(seconds=420)), Due("b", "imap", now),
                             Due("c", "imap", now, at=now + timedelta(seconds=60))])
    text = client.get("/metrics").text
    assert _gauge(text, "mailwarden_queue_jobs", '{queue="checks",state="ready"}') == 2
    assert _gauge(text, "mailwarden_queue_jobs", '{queue="checks",state="scheduled"}') == 1
    assert _gauge(text, "mailwarden_queue_jobs", '{queue="checks",state="running"}') == 0
    assert 420 <= _gauge(text, "mailwarden_queue_oldest_ready_seconds", '{queue="checks"}') < 480
    assert _gauge(text, "mailwarden_queue_workers_live") == 1
    page = client.get("/").text
    assert BEHIND in page
    waited = int(re.search(r"has waited (\d+) s, more than a check interval", page).group(1))
    assert 420 <= waited < 480


NO_WORKER = "No mailwarden worker is live: none sent a heartbeat in the last 20 s."


def test_the_footer_says_when_no_worker_is_live(tmp_path, shared_pg_url, monkeypatch):
    """`serve --no-worker` with no worker live: the footer says so and what happens meanwhile (the leader runs the
    checks itself after workerless_after, or they wait when it is 0); nothing once a worker sends heartbeats."""
    import html
    import re as re_

    def footer(client: TestClient) -> str:
        text = re_.sub(r"<[^>]+>", "", client.get("/").text.split("<footer>", 1)[1].split("</footer>", 1)[0])
        return " ".join(html.unescape(text).split())

    queue = _client(tmp_path, shared_pg_url, "queue", monkeypatch)
    said = footer(queue)
    assert NO_WORKER in said
    assert "Once none has been live for 60 s the leader runs the due checks itself, until one is." in said
    _enqueue(shared_pg_url, [])  # registers a worker: its heartbeat is now
    assert NO_WORKER not in footer(queue)
    assert NO_WORKER not in footer(_client(tmp_path, shared_pg_url, "local", monkeypatch))


def test_no_lag_said_within_an_interval_nor_in_local_mode(tmp_path, shared_pg_url, monkeypatch):
    from mailwarden.monitor.due import Due

    now = datetime.now(UTC)
    queue = _client(tmp_path, shared_pg_url, "queue", monkeypatch)
    _enqueue(shared_pg_url, [Due("a", "imap", now - timedelta(seconds=200))])  # within the 5 min interval
    assert BEHIND not in queue.get("/").text
    assert 200 <= _gauge(queue.get("/metrics").text, "mailwarden_queue_oldest_ready_seconds", '{queue="checks"}')
    local = _client(tmp_path, shared_pg_url, "local", monkeypatch)
    _enqueue(shared_pg_url, [Due("b", "imap", now - timedelta(seconds=900))])
    assert BEHIND not in local.get("/").text
    assert "mailwarden_queue_" not in local.get("/metrics").text


def test_the_footer_note_follows_the_queue_in_place(tmp_path, shared_pg_url, monkeypatch, browser):
    """The overview updates itself in place (<main> only): the footer's note goes once no check waits too long, without
    a reload, and is a paragraph of its own in the footer."""
    import psycopg

    from mailwarden.monitor.due import Due
    from mailwarden.monitor.leader import connect_params
    from tests.browser_fixtures import serving

    now = datetime.now(UTC)
    app = _app(tmp_path, shared_pg_url, "queue", monkeypatch, refresh="1s")
    _enqueue(shared_pg_url, [Due("a", "imap", now - timedelta(seconds=600))])
    with serving(app) as base:
        page = browser.new_page(viewport={"width": 390, "height": 800})
        page.goto(base + "/")
        note = page.locator("footer p.queue-lag")
        assert note.count() == 1 and BEHIND in note.inner_text()
        with psycopg.connect(**connect_params(shared_pg_url), autocommit=True,
                             options="-c search_path=procrastinate") as conn:  # its triggers name no schema
            conn.execute("DELETE FROM procrastinate.procrastinate_jobs")  # a worker took it
        deadline = time.monotonic() + 15
        while note.count() and time.monotonic() < deadline:  # the page's CSP allows no string eval (wait_for_function)
            page.wait_for_timeout(200)
        assert note.count() == 0
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload happened
        page.close()


def test_a_worker_keeps_its_heartbeat_after_a_failed_heartbeat_query(tmp_path, shared_pg_url, monkeypatch):
    """procrastinate's own heartbeat task dies on its first failed query and nothing restarts it (its side tasks are
    watched only until the first one ends): the leader would then run the worker's checks again while they still
    run. mailwarden's own heartbeat goes on: with procrastinate's failing every time, the worker's last heartbeat
    stays younger than two heartbeats."""
    import psycopg
    from procrastinate.exceptions import ConnectorException

    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.leader import connect_params
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.worker import WorkerService

    _app(tmp_path, shared_pg_url, "queue", monkeypatch)  # migrates; writes queue.yaml
    doc = yaml.safe_load((tmp_path / "queue.yaml").read_text())
    doc["execution"] = {"mode": "queue", "queue": {"heartbeat": 1, "stalled_after": 3}}
    (tmp_path / "queue.yaml").write_text(yaml.safe_dump(doc))
    runtime = open_runtime(config_mod.load(tmp_path / "queue.yaml"))
    service = WorkerService(lambda: runtime, concurrency=2)

    async def broken(worker_id):
        raise ConnectorException("heartbeat refused (the test)")

    monkeypatch.setattr(service.app.job_manager, "update_heartbeat", broken)

    def ages() -> list[float]:
        with psycopg.connect(**connect_params(shared_pg_url), autocommit=True) as conn:
            return [r[0] for r in conn.execute(
                "SELECT EXTRACT(EPOCH FROM now() - last_heartbeat)::float FROM procrastinate.procrastinate_workers")]

    async def go() -> list[list[float]]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        seen = []
        for _ in range(6):  # 6 s: procrastinate's heartbeat failed about 6 times
            await asyncio.sleep(1.0)
            seen.append(await asyncio.to_thread(ages))
        stop.set()
        await task
        return seen

    try:  # in a thread of its own: a browser test of this module keeps Playwright's event loop in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            seen = pool.submit(asyncio.run, go()).result()
    finally:
        runtime.close()
    assert all(len(s) == 1 for s in seen[1:]), seen  # one worker registered, never pruned
    assert max(s[0] for s in seen[2:]) < 2.0, seen
