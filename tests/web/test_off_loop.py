"""No SQL statement runs on the event loop that serves the web app (issue 15): a statement there stalls every other
request, the live updates' polling and, under `mailwarden serve`, the scheduler's checks for as long as it takes.

Every route of the app (derived from ``create_app``'s routes: a new route without a case here fails
``test_every_route_has_a_case``) is driven with the test client against a store with data of every kind: the demo
tenant after one cycle of checks and one alert dispatch (results, states, incidents, notifications, credentials,
rotations, a reauthorisation request, sign-ins, directory audits), copied into a new SQLite file and into
PostgreSQL. A SQLAlchemy ``before_cursor_execute`` listener on the store's engine records every statement executed
on a thread whose asyncio event loop is running: the app's loop (the test client's portal thread). Statements in
``asyncio.to_thread`` workers, or in sync handlers Starlette runs in its threadpool, run on threads without one."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import event, text
from starlette.routing import Match, Mount, Route
from starlette.testclient import TestClient

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import open_store
from mailwarden.monitor.models import MODELS
from mailwarden.monitor.web import auth
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from tests.storage_fixtures import BOTH, _emptied_pg
from tests.web.conftest import BASE, csrf_of, login

REAUTH_INTEGRATION = "oracle-b2c-support"  # the demo's delegated integration whose account's sessions were revoked


# -- the store: the demo tenant after a cycle, snapshotted once, copied into each database -----------------------
@pytest.fixture(scope="module")
def demo_snapshot(tmp_path_factory):
    """The demo (its sandbox keeps running for the checks, the sign-in and the re-runs) and a copy of its SQLite
    store taken before any test acted on it."""
    from mailwarden.monitor import demo as demo_mod
    from mailwarden.monitor.alerting import make_dispatcher
    from mailwarden.monitor.reauth_links import for_runtime

    env = demo_mod.prepare(tmp_path_factory.mktemp("demo"), quiet=True)
    try:
        env.run_once()
        rt = env.runtime
        make_dispatcher(rt.config, rt.store, reauth_urls=for_runtime(rt)).run_once()  # opens the incidents
        rt.store.history.rollup_history(datetime.now(UTC))
        pristine = env.config_path.parent / "pristine.db"
        src = sqlite3.connect(rt.config.database_url().removeprefix("sqlite:///"))
        dst = sqlite3.connect(pristine)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        scenario = yaml.safe_load(demo_mod.demo_scenario().read_text(encoding="utf-8"))
        passwords = {u["upn"]: u["password"] for u in scenario["tenants"][0]["users"]}
        yield env, pristine, passwords
    finally:
        env.close()


def _copy_rows(pristine: Path, url: str) -> None:
    """Every row of the snapshot, and nothing else, into the database at ``url``; PostgreSQL's id sequences then
    continue after the copied ids."""
    src, dst = open_store(f"sqlite:///{pristine}", migrate=False), open_store(url)
    try:
        tables = [t for t in MODELS[0].metadata.sorted_tables if t.name in {m.__tablename__ for m in MODELS}]
        with src.engine.connect() as read, dst.engine.begin() as write:
            for table in reversed(tables):  # what opening the new store wrote (its meta)
                write.execute(table.delete())
            for table in tables:
                rows = [dict(r._mapping) for r in read.execute(table.select())]
                if rows:
                    write.execute(table.insert(), rows)
            for table in tables:
                if "id" in table.c and dst.engine.dialect.name == "postgresql":
                    write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                       f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"))
    finally:
        src.close()
        dst.close()


@dataclass
class Recorder:
    """The statements executed on a thread running an event loop while ``armed``, and the routes the requests made
    while armed matched."""

    armed: bool = False
    violations: list[tuple[str, str, str]] = field(default_factory=list)  # (request, statement, where)
    matched: list[tuple[str, str]] = field(default_factory=list)
    request: str = ""

    def before_cursor_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self.armed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: fine
        frames = [f for f in traceback.extract_stack()[:-1] if "/mailwarden/" in f.filename or "/monitor/" in
                  f.filename or "/alerts/" in f.filename]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:]))
        self.violations.append((self.request, " ".join(statement.split())[:120],
                                f"{threading.current_thread().name}: {where}"))


@pytest.fixture(scope="module", params=BOTH)
def loop_world(request, demo_snapshot, tmp_path_factory):
    """(runtime, monitor, recorder, passwords, ca_path): the snapshot in a new SQLite file or in PostgreSQL, opened
    as `mailwarden serve` opens it, with the recorder listening on its engine."""
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.scheduler import Monitor
    from mailwarden.monitor.tokenstore import key_file_for

    env, pristine, passwords = demo_snapshot
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('offloop') / 'mailwarden.db'}"
    else:
        url = _emptied_pg(request)
    _copy_rows(pristine, url)
    cfg = config_mod.load(env.config_path)
    key = key_file_for(cfg)  # the demo's token key: the copied tokens are sealed with it
    assert key is not None and key.exists()
    cfg = cfg.model_copy(update={"database": url, "token_key": f"file:{key}"})
    rt = open_runtime(cfg)
    recorder = Recorder()
    event.listen(rt.store.engine, "before_cursor_execute", recorder.before_cursor_execute)
    try:
        yield rt, Monitor(rt), recorder, passwords, env.sandbox.ca_path
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", recorder.before_cursor_execute)
        rt.close()


# -- the routes --------------------------------------------------------------------------------------------
def route_keys(app) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves; HEAD goes with GET."""
    keys = set()
    for r in app.routes:
        if isinstance(r, Route):
            keys |= {(m, r.path) for m in (r.methods or {"GET"}) - {"HEAD"}}
        elif isinstance(r, Mount):
            keys.add(("GET", r.path))
        else:
            raise AssertionError(f"a route of a kind this test does not know: {r!r}")
    return keys


def matched_key(app, scope) -> tuple[str, str] | None:
    """The route the app's router picks for ``scope`` (the first full match, as Starlette's Router does)."""
    for r in app.routes:
        match, _ = r.matches(scope)
        if match == Match.FULL:
            return (scope["method"] if scope["method"] != "HEAD" else "GET", r.path)
    return None


@dataclass
class Ctx:
    rt: Any
    app: Any
    recorder: Recorder
    client: TestClient  # signed in
    anon: TestClient  # not signed in
    passwords: dict[str, str]
    ca_path: str

    @property
    def store(self):
        return self.rt.store

    def hit(self, client: TestClient, method: str, url: str, expect: int, **kw) -> Any:
        """One request with the recorder armed; its status must be ``expect`` (the case reached its route)."""
        self.recorder.armed, self.recorder.request = True, f"{method} {url}"
        try:
            r = client.request(method, url, follow_redirects=False, **kw)
        finally:
            self.recorder.armed = False
        assert r.status_code == expect, f"{method} {url}: {r.status_code} {r.text[:500]}"
        return r

    def csrf(self, client: TestClient | None = None) -> str:
        return csrf_of((client or self.client).get("/incidents").text)

    def open_incident(self) -> int:
        return next(i.id for i in self.store.alerts.incidents("open"))

    def integration_with(self, attr: str) -> Any:
        return next(i for i in self.rt.config.integrations if getattr(i, attr))

    def link(self) -> str:
        from mailwarden.monitor.reauth_links import for_runtime

        return urlsplit(for_runtime(self.rt)()[REAUTH_INTEGRATION]).path


def _login_post(c: Ctx) -> None:
    token = csrf_of(c.anon.get("/login").text)
    c.hit(c.anon, "POST", "/login", 303, data={"username": "admin", "password": "correct horse battery",
                                                "csrf_token": token, "next": "/"})


def _reauth_start(c: Ctx) -> None:
    link = c.link()
    token = csrf_of(c.anon.get(link).text)
    c.hit(c.anon, "POST", link, 303, data={"csrf_token": token})


def _callback(c: Ctx) -> None:
    """The whole reauthorisation: the link, the button, the sign-in at the sandbox's Entra ID, then the callback
    (which stores the token, closes the request and runs the integration's checks); and a forged state."""
    from mailwarden_sandbox.browser import sign_in

    c.hit(c.anon, "GET", "/auth/callback?state=forged&code=x", 400)
    link = c.link()
    token = csrf_of(c.anon.get(link).text)
    r = c.anon.post(link, data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    account = c.rt.config.integration(REAUTH_INTEGRATION).account
    back = urlsplit(sign_in(r.headers["location"], account, c.passwords[account], c.ca_path))
    done = c.hit(c.anon, "GET", f"{back.path}?{back.query}", 200)
    assert 'data-outcome="ok"' in done.text


# (method, path template) -> what exercises it. Order matters once: the callback closes the reauthorisation
# request the link pages need, so it comes last.
CASES: dict[tuple[str, str], Callable[[Ctx], None]] = {
    ("GET", "/"): lambda c: [c.hit(c.client, "GET", url, 200) for url in ("/", "/?group=tenant&page=all")],
    ("GET", "/integrations/{name}"): lambda c: c.hit(c.client, "GET", f"/integrations/{REAUTH_INTEGRATION}", 200),
    ("GET", "/login"): lambda c: c.hit(c.anon, "GET", "/login", 200),
    ("POST", "/login"): _login_post,
    ("POST", "/logout"): lambda c: c.hit(c.client, "POST", "/logout", 303, data={"csrf_token": c.csrf()}),
    ("POST", "/integrations/{name}/checks/{check}/run"): lambda c: c.hit(
        c.client, "POST", "/integrations/sinch-queue/checks/token/run", 303, data={"csrf_token": c.csrf()}),
    ("POST", "/incidents/{id:id}/ack"): lambda c: c.hit(
        c.client, "POST", f"/incidents/{c.open_incident()}/ack", 303, data={"csrf_token": c.csrf()}),
    ("POST", "/incidents/{id:id}/snooze"): lambda c: c.hit(
        c.client, "POST", f"/incidents/{c.open_incident()}/snooze", 303, data={"csrf_token": c.csrf(), "for": "2h"}),
    ("GET", "/incidents"): lambda c: c.hit(c.client, "GET", "/incidents?status=all", 200),
    ("GET", "/incidents/{id:id}"): lambda c: c.hit(c.client, "GET", f"/incidents/{c.open_incident()}", 200),
    ("GET", "/systems"): lambda c: c.hit(c.client, "GET", "/systems", 200),
    ("GET", "/systems/{system:path}"): lambda c: c.hit(
        c.client, "GET", f"/systems/{c.integration_with('system').system}", 200),
    ("GET", "/apps/{app:path}"): lambda c: c.hit(c.client, "GET", f"/apps/{c.integration_with('app').app}", 200),
    ("GET", "/tenants"): lambda c: c.hit(c.client, "GET", "/tenants", 200),
    ("GET", "/secrets"): lambda c: c.hit(c.client, "GET", "/secrets", 200),
    ("GET", "/api/openapi.json"): lambda c: c.hit(c.client, "GET", "/api/openapi.json", 200),
    ("GET", "/api/status"): lambda c: c.hit(c.client, "GET", "/api/status", 200),
    ("GET", "/api/integrations"): lambda c: c.hit(c.client, "GET", "/api/integrations?status=problem", 200),
    ("GET", "/api/integrations/{name}"): lambda c: c.hit(c.client, "GET", "/api/integrations/sinch-queue", 200),
    ("GET", "/api/results"): lambda c: c.hit(c.client, "GET", "/api/results?integration=sinch-queue&limit=5", 200),
    ("GET", "/api/incidents"): lambda c: c.hit(c.client, "GET", "/api/incidents?status=all", 200),
    ("GET", "/api/credentials"): lambda c: c.hit(c.client, "GET", "/api/credentials?within_days=400", 200),
    ("GET", "/api/secrets"): lambda c: c.hit(c.client, "GET", "/api/secrets", 200),
    ("GET", "/healthz"): lambda c: c.hit(c.anon, "GET", "/healthz", 200),
    ("GET", "/metrics"): lambda c: c.hit(c.client, "GET", "/metrics", 200),
    ("GET", "/static"): lambda c: c.hit(c.anon, "GET", "/static/app.css", 200),
    ("GET", "/reauth/{token}"): lambda c: c.hit(c.anon, "GET", c.link(), 200),
    ("POST", "/reauth/{token}"): _reauth_start,
    ("GET", "/auth/callback"): _callback,
}


def _app(rt, monitor, admin_hash):
    return create_app(lambda: rt.config, lambda: rt.store, monitor=monitor,
                      access=Access(mode="password", user="admin", password_hash=admin_hash))


def test_every_route_has_a_case(tmp_path, admin_hash):
    """A new route must be added to CASES (and so be driven by the test below); a case without its route goes."""
    from tests.web.conftest import World

    app = World(tmp_path, admin_hash).app()
    missing, extra = route_keys(app) - CASES.keys(), CASES.keys() - route_keys(app)
    assert not missing, f"routes no case drives (add them to CASES): {sorted(missing)}"
    assert not extra, f"cases of routes the app no longer has: {sorted(extra)}"


@pytest.mark.parametrize("route", list(CASES), ids=[f"{m} {p}" for m, p in CASES])
def test_no_sql_runs_on_the_event_loop(route, loop_world, admin_hash, monkeypatch):
    rt, monitor, recorder, passwords, ca_path = loop_world
    monkeypatch.setattr(auth, "ENDED_REFRESH_S", 0.0)  # the Gate re-reads the ended sessions on every request
    app = _app(rt, monitor, admin_hash)

    async def seen(scope, receive, send):  # which route each armed request reached
        if scope["type"] == "http" and recorder.armed:
            recorder.matched.append(matched_key(app, scope))
        await app(scope, receive, send)

    recorder.violations.clear()
    recorder.matched.clear()
    with TestClient(seen, base_url=BASE) as client, TestClient(seen, base_url=BASE) as anon:
        assert login(client).status_code == 303
        CASES[route](Ctx(rt, app, recorder, client, anon, passwords, ca_path))
    assert route in recorder.matched, f"the case of {route} never reached it: {recorder.matched}"
    if recorder.violations:
        pytest.fail(f"{len(recorder.violations)} SQL statement(s) on the event loop serving the app (move the store "
                    "call into asyncio.to_thread):\n" + "\n".join(f"  {req}: {stmt}\n    at {where}"
                                                              for req, stmt, where in recorder.violations),
                    pytrace=False)
