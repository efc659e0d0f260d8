"""The secrets cycle finds each app's integrations in one pass over the config: a scan of every integration per app
held the leader's event loop for seconds at 10,000 integrations of 1,000 apps (bench --scale 10000)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import yaml

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.secrets import SecretsCycle, users_by_app
from tests.monitor.test_config import _CountingList


def _config(tmp_path, monkeypatch, apps: int, per_app: int):
    monkeypatch.setenv("MW_SECRET", "x")
    doc = {"tenants": {"t": {"tenant_id": str(uuid.uuid4())}},
           "apps": {f"a{i}": {"tenant": "t", "client_id": str(uuid.uuid4()), "secret": "env:MW_SECRET"}
                    for i in range(apps)},
           "integrations": [{"name": f"a{i}-{j}", "app": f"a{i}", "flow": "app", "mailbox": f"m{i}-{j}@contoso.com",
                             "paused": j == 0, "checks": {"secret_expiry": {}}}
                            for i in range(apps) for j in range(per_app)]}
    path = tmp_path / "mailwarden.yaml"
    path.write_text(yaml.safe_dump(doc))
    return config_mod.load(path)


class Unreadable:
    """Every app's credentials unreadable: the cycle only looks its integrations up and moves on."""

    async def read(self, name):
        return SimpleNamespace(ok=False, reason="not read (test)")


def test_users_by_app_groups_the_integrations_not_paused(tmp_path, monkeypatch):
    cfg = _config(tmp_path, monkeypatch, apps=3, per_app=3)
    users = users_by_app(cfg)
    assert {app: [i.name for i in integs] for app, integs in users.items()} == {
        "a0": ["a0-1", "a0-2"], "a1": ["a1-1", "a1-2"], "a2": ["a2-1", "a2-2"]}


def test_a_secrets_cycle_walks_the_integrations_once_whatever_the_number_of_apps(tmp_path, monkeypatch):
    cfg = _config(tmp_path, monkeypatch, apps=40, per_app=5)
    cfg.integrations = _CountingList(cfg.integrations)
    cycle = SecretsCycle(cfg, store=None, tokens=None, reader=Unreadable())  # type: ignore[arg-type]
    walked = _CountingList.walks
    report = asyncio.run(cycle.run())
    assert len(report.errors) == 40  # every app was visited
    assert _CountingList.walks - walked == 1
