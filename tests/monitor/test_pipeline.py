"""One path after every result (issue 15, item 1): the scheduler, the dashboard's "Re-run now" and `mailwarden
check` all hand their results to the runtime's ResultPipeline, which stores the result, its state and transition
and its reauthorisation request in one transaction, then tells its subscribers (dispatch soon, metrics)."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from mailwarden.checks.base import Outcome, Status
from mailwarden.errors import StorageError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app as cli_app
from mailwarden.monitor.pipeline import ResultPipeline
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from tests.dashboards.conftest import csrf_of
from tests.monitor.test_scheduler import integ, kinds, write_config  # noqa: F401 - the scripted check kinds

DELEGATED = {"flow": "delegated", "account": "mail@contoso.com"}


@pytest.fixture
def recorded(monkeypatch):
    """Every ResultPipeline.record call, as (integration, check, status, transition)."""
    calls: list[tuple] = []
    real = ResultPipeline.record

    async def spy(self, result, thresholds):
        out = await real(self, result, thresholds)
        t = out.transition
        calls.append((out.integration, out.check, out.outcome.status.value,
                      f"{t.from_status}->{t.to_status}" if t else None))
        return out

    monkeypatch.setattr(ResultPipeline, "record", spy)
    return calls


async def test_scheduler_rerun_and_check_all_go_through_the_pipeline(tmp_path, kinds, recorded):  # noqa: F811
    token, _ = kinds
    path = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    monitor = Monitor(open_runtime(config_mod.load(path)), path)
    soon, seen = [], []
    monitor._dispatch_soon = lambda: soon.append(1)
    monitor.on_result = seen.append
    try:
        await monitor._run_local("i0", "token")  # a scheduled run
        assert recorded == [("i0", "token", "ok", "new->ok")]
        assert soon == [1] and [(r.integration, r.check) for r in seen] == [("i0", "token")]
        token.script["i0"] = [Outcome(Status.FAIL, "consent_missing", "no consent")]
        web = create_app(monitor.runtime.config, monitor.runtime.store, monitor=monitor, access=Access(mode="none"))
        with TestClient(web, base_url="http://127.0.0.1:8080") as client:  # "Re-run now" on the dashboard
            page = client.get("/integrations/i0")
            r = client.post("/integrations/i0/checks/token/run", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 200 and "token re-run: fail (consent_missing)" in r.text
        assert recorded[1:] == [("i0", "token", "fail", "ok->fail")]
        assert soon == [1, 1] and len(seen) == 2  # alerts follow at once, the metrics see it
    finally:
        monitor.shutdown()
    # `mailwarden check` (its own asyncio.run: another thread than this test's loop)
    res = await asyncio.to_thread(CliRunner().invoke, cli_app, ["check", "-c", str(path), "--format", "json",
                                                                "--check", "token"])
    assert [r["status"] for r in json.loads(res.stdout)] == ["ok"], res.output
    assert recorded[2:] == [("i0", "token", "ok", "fail->ok")]


async def test_a_failing_subscriber_loses_no_result_and_stops_no_other(tmp_path, kinds):  # noqa: F811
    path = write_config(tmp_path / "mailwarden.yaml", integ("i0"))
    monitor = Monitor(open_runtime(config_mod.load(path)), path)
    soon = []
    monitor._dispatch_soon = lambda: soon.append(1)

    def broken(result):
        raise RuntimeError("a metrics hook bug")

    monitor.on_result = broken
    try:
        web = create_app(monitor.runtime.config, monitor.runtime.store, monitor=monitor, access=Access(mode="none"))
        with TestClient(web, base_url="http://127.0.0.1:8080") as client:
            page = client.get("/integrations/i0")
            r = client.post("/integrations/i0/checks/token/run", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 200 and "token re-run: ok" in r.text  # not a server error
        assert [x.status for x in monitor.runtime.store.checks.results("i0", "token")] == ["ok"]
        assert soon == [1]
    finally:
        monitor.shutdown()


async def test_a_buffered_result_opens_and_closes_its_reauthorisation_request_when_written(tmp_path, kinds):  # noqa: F811
    token, _ = kinds
    path = write_config(tmp_path / "mailwarden.yaml", integ("d0", **DELEGATED))
    monitor = Monitor(open_runtime(config_mod.load(path)), path)
    monitor._attach(monitor.runtime)  # as start() does: the leader buffers
    store = monitor.runtime.store
    real, down = store.checks.record_results, [True]

    def guarded(*a, **kw):
        if down[0]:
            raise StorageError("database failed: connection refused")
        return real(*a, **kw)

    store.checks.record_results = guarded
    try:
        token.script["d0"] = [Outcome(Status.FAIL, "refresh_token_revoked", "AADSTS50173"),
                              Outcome(Status.OK, None, "token ok")]
        await monitor._run_local("d0", "token")
        assert len(monitor.buffer) == 1 and store.reauth.open_reauth_requests() == []
        down[0] = False
        assert await monitor._ready() is True  # the buffer is written first
        [req] = store.reauth.open_reauth_requests()
        assert (req.integration, req.code, req.account) == ("d0", "refresh_token_revoked", "mail@contoso.com")
        await monitor._run_local("d0", "token")  # good again: the link stops working
        assert store.reauth.open_reauth_requests() == []
        assert [r.closed_by for r in store.reauth.reauth_requests()] == ["token_ok"]
    finally:
        monitor.shutdown()
