"""The dashboard's fixtures: one demo store per session (the sandbox tenant, one cycle of checks, one
alert dispatch so incidents exist), and apps on top of it with each access rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from tests.web.conftest import (  # noqa: F401 - the admin's password and sign-in helpers, shared with tests/web
    PASSWORD,
    admin_hash,
    basic,
    csrf_of,
    login,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from mailwarden.monitor import demo as demo_mod
    from mailwarden.monitor.alerting import make_dispatcher

    env = demo_mod.prepare(tmp_path_factory.mktemp("demo"), quiet=True)
    try:
        rows = env.run_once()
        make_dispatcher(env.runtime.config, env.runtime.store).run_once()  # opens the incidents (console route)
        env.runtime.store.history.rollup_history(datetime.now(UTC))
        yield env, rows
    finally:
        env.close()


def make_app(env, access: Access, monitor=None):
    return create_app(env.runtime.config, env.runtime.store, monitor=monitor, access=access)


@pytest.fixture
def app(demo, admin_hash):  # noqa: F811 - the fixture imported above
    env, _ = demo
    return make_app(env, Access(mode="password", user="admin", password_hash=admin_hash))


@pytest.fixture
def client(app):
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert login(c).status_code == 303
        yield c


def small_store(path: Path, cfg, now: datetime, *, stale: tuple[str, ...] = (), failing: tuple[str, ...] = ()):
    """A store of the demo's integrations with results written straight (no checks run): every check ok a
    minute ago, except ``failing`` integrations (their token check fails) and ``stale`` ones (their results
    are two hours old: the demo checks every minute)."""
    from datetime import timedelta

    from mailwarden.checks.base import Outcome, Status
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.runtime import integration_rows
    from mailwarden.state import Thresholds

    store = open_store(f"sqlite:///{path}")
    store.inventory.sync_integrations(integration_rows(cfg), now - timedelta(days=1))
    for integ in cfg.integrations:
        at = now - (timedelta(hours=2) if integ.name in stale else timedelta(minutes=1))
        for kind in integ.checks:
            bad = integ.name in failing and kind == "token"
            outcome = Outcome(Status.FAIL if bad else Status.OK, "consent_missing" if bad else None,
                              "consent removed" if bad else "ok", latency_ms=80.0)
            store.checks.record_result(integration=integ.name, check=kind, outcome=outcome, checked_at=at,
                                       thresholds=Thresholds(1, 1))
    return store
