"""Rotation tests: the session sandbox and its per-test tenants (tests/sandbox_fixtures.py), a loopback alert
receiver, and helpers that run the secrets cycle with a fake clock."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.secrets import SecretsCycle
from tests.alerts.conftest import receiver  # noqa: F401 - loopback json:// receiver

T0 = datetime.now(UTC)


class Clock:
    def __init__(self, start: datetime = T0):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


def cycle(w, clock, restart: bool = True):
    """One secrets cycle as `serve` runs it, with a fresh Graph read; ``restart``: a new runtime and store."""
    rt = w.open() if restart or w.runtime is None else w.runtime
    rt.credentials._cache.clear()
    return asyncio.run(SecretsCycle(rt.config, rt.store, rt.tokens, rt.credentials, clock).run())


def dispatch(w, clock):
    rt = w.runtime or w.open()
    return make_dispatcher(rt.config, rt.store, clock=clock).run_once(clock())


def with_alerts(receiver_url: str, *, names=("subject",), **integ):  # noqa: F811
    def mutate(doc):
        base = doc["integrations"][0]
        doc["integrations"] = [dict(base, name=n, mailbox=f"{n}@contoso.com", owners=[f"owner-{n}@contoso.com"],
                                    tags=["helpdesk"], **integ) for n in names]
        doc["alerts"] = {"routes": [{"name": "team", "url": receiver_url, "tags": ["helpdesk"]}],
                         "owner_route": receiver_url + "?owner={owner}"}
    return mutate


def automated(hook_out: str = "hook.out", **rotation):
    code = f"import sys; open({hook_out!r}, 'w').write(sys.stdin.read())"

    def mutate(doc):
        doc["apps"]["subject"]["rotation"] = {"automated": True, "hook_command": [sys.executable, "-c", code],
                                              **rotation}
        base = doc["integrations"][0]
        base.update(owners=["owner@contoso.com"], tags=["helpdesk"])
    return mutate


@pytest.fixture
def clock():
    return Clock(datetime.now(UTC))
