"""Alert evaluation in two steps (issue 15, item 2): transitions are folded into incidents under the write lock, and
the notices are rendered (Jinja2) and routed (Apprise config files) after that commit, outside it; a dispatch cycle
with nothing new asks the database one question and takes no lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from mailwarden.alerts import dispatcher as dispatcher_mod
from mailwarden.alerts import messages, routes
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.db import _IMMEDIATE, open_store
from mailwarden.monitor.runtime import integration_rows
from tests.alerts.conftest import load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


class Watch:
    """What the store does, seen on its engine: the statements, and whether the SQLite write lock is held."""

    def __init__(self, engine):
        self.statements: list[str] = []
        self.write_transactions = 0
        self.locked = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _statement(self, conn, cursor, sql, *args):
        if not sql.startswith("BEGIN"):  # SQLite's BEGIN (a deferred one for reads) is how a transaction starts
            self.statements.append(sql)

    def _begin(self, conn):
        if conn.get_execution_options().get(_IMMEDIATE):
            self.write_transactions += 1
            self.locked = True

    def _end(self, conn):
        if conn.get_execution_options().get(_IMMEDIATE):
            self.locked = False

    def reset(self):
        self.statements.clear()
        self.write_transactions = 0


@pytest.fixture
def setup(tmp_path, receiver):
    (tmp_path / "apprise.yml").write_text(f"urls:\n  - {receiver.url}\n")
    cfg = load(write_config(tmp_path / "mailwarden.yaml", names=("a", "b"), shared=False,
                            routes=[{"name": "file", "config": "apprise.yml"}], reminder_interval="1h"))
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), T0)
    yield cfg, store
    store.close()


def test_an_idle_cycle_reads_one_statement_and_takes_no_lock(setup, receiver):
    cfg, store = setup
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    assert d.run_once(T0).sent == 1
    watch = Watch(store.engine)
    for minutes in (1, 15, 59):  # the reminder is due after an hour: nothing to do before
        assert d.evaluate(T0 + timedelta(minutes=minutes)) == []
    assert len(watch.statements) == 3 and watch.write_transactions == 0, watch.statements
    # a person's snooze (or ack) changes the incident outside a fold: the next cycle folds, then idles again
    [inc] = store.alerts.incidents()
    store.alerts.snooze_incident(inc.id, T0 + timedelta(hours=2))
    watch.reset()
    assert d.evaluate(T0 + timedelta(minutes=60)) == []  # snoozed: no reminder
    assert watch.write_transactions >= 1
    watch.reset()
    assert d.evaluate(T0 + timedelta(minutes=90)) == [] and len(watch.statements) == 1
    assert [x.kind for x in d.evaluate(T0 + timedelta(hours=2))] == ["reminder"]
    # a new transition is new
    record(store, "b", "token", "fail", "consent_missing", at=T0 + timedelta(hours=2, minutes=1))
    assert [x.kind for x in d.evaluate(T0 + timedelta(hours=2, minutes=1))] == ["opened"]


def test_notices_are_rendered_and_routed_outside_the_write_lock(setup, receiver, monkeypatch):
    cfg, store = setup
    watch = Watch(store.engine)
    seen: list[tuple[str, bool]] = []

    def spy(name, real):
        def call(*a, **kw):
            seen.append((name, watch.locked))
            return real(*a, **kw)
        return call

    monkeypatch.setattr(messages, "render", spy("render", messages.render))  # Jinja2
    monkeypatch.setattr(routes, "services", spy("apprise config", routes.services))  # reads apprise.yml
    monkeypatch.setattr(config_mod, "resolve_ref", spy("secret file", config_mod.resolve_ref))  # the app's secret
    d = make_dispatcher(cfg, store, reauth_urls=spy("reauth links", dict))
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    record(store, "b", "token", "fail", "secret_expired", at=T0)
    report = d.run_once(T0)
    assert report.sent == 2 and len(receiver.bodies) == 2
    assert watch.write_transactions >= 2  # the fold; the deliveries queued; each claim and send
    assert {name for name, _ in seen} == {"render", "apprise config", "secret file", "reauth links"}
    assert [name for name, locked in seen if locked] == []


def test_a_crash_between_the_fold_and_the_routing_loses_no_notice(setup, receiver):
    cfg, store = setup
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    make_dispatcher(cfg, store).fold(T0)  # committed; the process dies before rendering
    assert receiver.bodies == []
    d = make_dispatcher(cfg, store)  # the next process (or the next cycle)
    assert d.run_once(T0 + timedelta(seconds=15)).sent == 1
    assert d.run_once(T0 + timedelta(seconds=30)).sent == 0
    assert [b["title"].rsplit("[", 1)[1].rstrip("]") for b in receiver.bodies] == ["1/opened/1"]
    assert {x.state for x in store.alerts.deliveries()} == {"sent"}


def test_a_notice_that_cannot_be_rendered_waits_and_holds_back_no_other(setup, receiver, monkeypatch):
    cfg, store = setup
    real = messages.render

    def broken_for_a(notice, ctx, **kw):
        if notice.incident is not None and "a" in notice.incident.affected:
            raise RuntimeError("template bug")
        return real(notice, ctx, **kw)

    monkeypatch.setattr(dispatcher_mod.messages, "render", broken_for_a)
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    record(store, "b", "token", "fail", "consent_missing", at=T0)
    assert d.run_once(T0).sent == 1  # b's
    monkeypatch.setattr(dispatcher_mod.messages, "render", real)  # fixed (a new release)
    assert d.run_once(T0 + timedelta(seconds=15)).sent == 1  # a's, kept for the next cycle
    first, second = receiver.bodies
    assert "- b / token" in first["message"] and "- a / token" in second["message"]
    assert d.run_once(T0 + timedelta(seconds=30)).sent == 0
