"""Issue 9, faults: a restart (the SIGKILL case without the signal: every in-memory object dropped, the
database kept). Open incidents survive, no opening notice is sent again, reminders keep their schedule."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

from mailwarden.alerts.records import Incident
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.runtime import integration_rows, open_runtime
from tests.alerts.conftest import load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
NAMES = ("a", "b")


def boot(path):
    """What `mailwarden serve` does at start: load the config, open the store, build a dispatcher."""
    cfg = load(path)
    runtime = open_runtime(cfg)
    return runtime, make_dispatcher(cfg, runtime.store)


def kinds(receiver) -> list[str]:
    return [b["title"].split(":")[0] for b in receiver.bodies]


def test_restart_keeps_incidents_sends_no_second_opening_and_reminders_stay_on_schedule(tmp_path, receiver):
    path = write_config(tmp_path / "mailwarden.yaml", names=NAMES, shared=False,
                        routes=[{"name": "hook", "url": receiver.url}], reminder_interval="1h")
    runtime, d = boot(path)
    store = runtime.store
    store.inventory.sync_integrations(integration_rows(runtime.config), T0)
    for n in NAMES:
        record(store, n, "token", "ok", at=T0)
    d.run_once(T0)
    for n in NAMES:
        record(store, n, "token", "fail", "secret_expired", at=T0 + timedelta(minutes=5))
    assert d.run_once(T0 + timedelta(minutes=5)).sent == 2
    opened = {(i.id, i.key, i.opened_at, i.sequence) for i in store.alerts.incidents()}
    assert len(opened) == 2 and len(receiver.bodies) == 2

    # the crash: nothing in memory survives, nothing is closed cleanly
    del d, store
    runtime = None
    gc.collect()

    runtime, d = boot(path)
    store = runtime.store
    assert {(i.id, i.key, i.opened_at, i.sequence) for i in store.alerts.incidents()} == opened
    # more failing results after the restart: still the same incidents, no new opening notice
    for m in (10, 20, 40):
        for n in NAMES:
            record(store, n, "token", "fail", "secret_expired", at=T0 + timedelta(minutes=m))
        assert d.run_once(T0 + timedelta(minutes=m)).sent == 0, m
    assert len(receiver.bodies) == 2
    assert store.count(Incident) == 2

    # the reminder is due one interval after the opening notice sent before the restart, not after the restart
    assert d.run_once(T0 + timedelta(minutes=64)).sent == 0
    assert d.run_once(T0 + timedelta(minutes=65)).sent == 2
    assert d.run_once(T0 + timedelta(minutes=90)).sent == 0

    # and a second restart between reminders changes nothing either
    del d, store
    runtime = None
    gc.collect()
    runtime, d = boot(path)
    store = runtime.store
    assert d.run_once(T0 + timedelta(minutes=100)).sent == 0
    assert d.run_once(T0 + timedelta(minutes=125)).sent == 2
    bodies = [b["title"] + b["message"] for b in receiver.bodies]
    assert len(bodies) == 6
    assert all("still failing" in b.lower() for b in bodies[2:]), bodies[2:]
    assert not any("still failing" in b.lower() for b in bodies[:2]), bodies[:2]
    notes = store.alerts.notifications()
    assert sorted(n.kind for n in notes) == ["opened"] * 2 + ["reminder"] * 4
    assert all(i.reminders == 2 for i in store.alerts.incidents())
    runtime.close()
