"""`ack`, `snooze`, `incidents`, `alerts test`, `check --no-alerts`; the reauthorisation link slot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from typer.testing import CliRunner

from mailwarden.alerts import messages
from mailwarden.alerts.incidents import parse_until
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.cli import app
from mailwarden.monitor.db import open_store
from mailwarden.monitor.runtime import integration_rows
from tests.alerts.conftest import load, record, write_config

NOW = datetime.now(UTC)


@pytest.fixture
def env(tmp_path, receiver):
    path = write_config(tmp_path / "mailwarden.yaml", routes=[{"name": "hook", "url": receiver.url, "tags": ["ops"]}])
    doc = yaml.safe_load(path.read_text())  # a revoked refresh token is a delegated integration's
    doc["integrations"][0].update(flow="delegated", account="svc-a@contoso.com")
    path.write_text(yaml.safe_dump(doc))
    cfg = load(path)
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), NOW)
    record(store, "a", "token", "fail", "refresh_token_revoked", at=NOW)
    make_dispatcher(cfg, store).run_once(NOW)
    yield path, cfg, store
    store.close()


def cli(*args):
    return CliRunner().invoke(app, list(args))


def test_incidents_ack_and_snooze(env):
    path, cfg, store = env
    r = cli("incidents", "-c", str(path), "--format", "json")
    assert r.exit_code == 1, r.output
    [row] = json.loads(r.output)
    assert row["id"] == 1 and row["code"] == "refresh_token_revoked" and row["integrations"] == ["a"]
    assert cli("ack", "1", "--by", "alice", "-c", str(path)).exit_code == 0
    assert store.alerts.get_incident(1).ack_by == "alice"
    assert cli("ack", "99", "--by", "alice", "-c", str(path)).exit_code == 1
    assert cli("snooze", "1", "--for", "2h", "-c", str(path)).exit_code == 0
    until = store.alerts.get_incident(1).snoozed_until
    assert timedelta(hours=1, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=2)
    assert cli("snooze", "1", "--for", "31d", "-c", str(path)).exit_code == 3  # a usage error (DESIGN.md)
    assert cli("snooze", "1", "--until", "2020-01-01T00:00Z", "-c", str(path)).exit_code == 3
    for cmd in (["ack", "--help"], ["snooze", "--help"], ["incidents", "--help"], ["alerts", "test", "--help"]):
        assert "Exit" in cli(*cmd).output


def test_parse_until_bounds():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_until("2030-01-02T00:00+01:00", None, now) == datetime(2030, 1, 1, 23, 0, tzinfo=UTC)
    assert parse_until(None, "30d", now) == now + timedelta(days=30)
    for bad in (("2030-01-02T00:00", None), (None, "2x"), (None, None), ("2030-03-01T00:00Z", None)):
        with pytest.raises(ValueError):
            parse_until(*bad, now)


def test_alerts_test_command_reports_each_service(env, receiver):
    path, _, store = env
    r = cli("alerts", "test", "--route", "ops", "-c", str(path))
    assert r.exit_code == 0, r.output
    assert "hook" in r.output and "ok" in r.output
    assert cli("alerts", "test", "--route", "nothing", "-c", str(path)).exit_code == 3


def test_reauth_link_slot_only_when_given_and_needed(env):
    _, cfg, store = env
    inc = store.alerts.get_incident(1)
    notice = Notice("opened", inc, 1)
    plain = messages.render(notice, messages.Context(cfg))
    assert "Re-authorise:" not in plain.text and "mailwarden reauth a" in plain.text
    linked = messages.render(notice, messages.Context(cfg, reauth_urls={"a": "https://mw.example/reauth/xyz"}))
    assert "Re-authorise:" in linked.text and "https://mw.example/reauth/xyz" in linked.markdown
    other = Incident(id=5, key="int:a:consent_missing", kind="single", code="consent_missing", members=[
        {"integration": "a", "check": "token", "status": "fail", "code": "consent_missing",
         "since": NOW.isoformat()}], affected=["a"], opened_at=NOW)
    no_reauth = messages.render(Notice("opened", other, 1), messages.Context(cfg, reauth_urls={"a": "https://x/y"}))
    assert "https://x/y" not in no_reauth.text
    assert "key: 5/opened/1" in no_reauth.text and "5/opened/1" in no_reauth.title


def test_check_dispatches_unless_no_alerts(tmp_path, receiver, monkeypatch):
    path = write_config(tmp_path / "mailwarden.yaml", routes=[{"name": "hook", "url": receiver.url}])
    cfg = load(path)
    # The endpoints are a closed loopback port: the check errors; what matters is whether check dispatches.
    calls = []
    import mailwarden.monitor.cli_alerts as cli_alerts

    monkeypatch.setattr(cli_alerts, "dispatch_once", lambda runtime: calls.append(runtime))
    cli("check", "-c", str(path), "--check", "secret_expiry", "--no-alerts")
    assert calls == []
    cli("check", "-c", str(path), "--check", "secret_expiry")
    assert len(calls) == 1
    assert cfg.alerts.active()


async def test_scheduler_runs_the_dispatcher_after_a_transition(tmp_path, receiver):
    """The Monitor has a dispatch job (every 15 s) when alerts are configured, and runs it after a transition."""
    import asyncio

    import time_machine

    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.scheduler import DISPATCH_JOB, Monitor

    path = write_config(tmp_path / "mailwarden.yaml", routes=[{"name": "hook", "url": receiver.url}])
    t0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    with time_machine.travel(t0, tick=False) as traveller:
        monitor = Monitor(open_runtime(load(path)), path)
        monitor.start()
        try:
            job = monitor.scheduler.get_job(DISPATCH_JOB)
            assert job is not None and job.trigger.interval == timedelta(seconds=15)
            store = monitor.runtime.store
            record(store, "a", "token", "fail", "consent_missing", at=t0)
            traveller.move_to(t0 + timedelta(seconds=1))
            monitor._dispatch_soon()
            for _ in range(300):
                if receiver.bodies:
                    break
                await asyncio.sleep(0.01)
            assert len(receiver.bodies) == 1 and "key: 1/opened/1" in receiver.bodies[0]["message"]
        finally:
            monitor.shutdown()
            await asyncio.sleep(0.01)


def test_maintenance_summary_lists_each_held_incident_on_its_own_line(env):
    _, cfg, _ = env
    held = [Incident(id=i, key=f"int:{n}:consent_missing", kind="single", code="consent_missing", members=[
        {"integration": n, "check": "token", "status": "fail", "code": "consent_missing", "since": NOW.isoformat()}],
        affected=[n], opened_at=NOW, status=status, resolved_at=None if status == "open" else NOW)
        for i, n, status in ((8, "a", "open"), (9, "b", "resolved"))]
    summary = Notice("maintenance_summary", None, 1, window="patch", window_end=NOW, incidents=held)
    message = messages.render(summary, messages.Context(cfg))
    for body in (message.text, message.markdown):
        lines = body.splitlines()
        assert sum(line.startswith("- ") and "#8" in line and "open" in line.lower() for line in lines) == 1, body
        assert sum(line.startswith("- ") and "#9" in line and "resolved" in line for line in lines) == 1, body
        assert any(line.startswith("1 incident(s) still open") for line in lines), body
