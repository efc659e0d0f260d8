"""Two dispatchers (separate engines, as two processes) on one database send each notification once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.db import open_store
from mailwarden.monitor.runtime import integration_rows
from tests.alerts.conftest import load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url):
    return database_url


def test_two_dispatchers_at_once_send_each_notification_once(tmp_path, receiver, database):
    names = tuple(f"i{n}" for n in range(8))
    cfg = load(write_config(tmp_path / "mailwarden.yaml", names=names, shared=False, database=database,
                            routes=[{"name": "hook", "url": receiver.url}]))
    stores = [open_store(cfg.database_url()) for _ in range(2)]
    stores[0].inventory.sync_integrations(integration_rows(cfg), T0)
    dispatchers = [make_dispatcher(cfg, s, worker=f"w{i}") for i, s in enumerate(stores)]
    try:
        for step in range(3):
            at = T0 + timedelta(minutes=step)
            status = "ok" if step == 2 else "fail"
            for n in names:
                record(stores[0], n, "token", status, None if status == "ok" else f"code{step}", at=at)
            barrier = threading.Barrier(2)
            errors = []

            def go(d, at=at, barrier=barrier, errors=errors):
                try:
                    barrier.wait()
                    for k in range(3):
                        d.run_once(at + timedelta(seconds=k))
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=go, args=(d,)) for d in dispatchers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == []
        keys = [b["title"].rsplit("[", 1)[1].rstrip("]") for b in receiver.bodies]
        assert len(keys) == len(set(keys)) == 2 * len(names)  # opened, resolved (fail -> fail: no transition)
        notes = stores[0].alerts.notifications()
        assert len(notes) == len(keys) and all(n.ok for n in notes)
        assert {d.state for d in stores[0].alerts.deliveries()} == {"sent"}
    finally:
        for s in stores:
            s.close()
