"""The store is one database and one repository per port (issue 15): nothing else is public on it, so the god-object
cannot grow back, and its alert repository is the alerts layer's port (``alerts.ports.AlertRepository``) as
declared. Every test runs on SQLite and on PostgreSQL (``store``)."""

from __future__ import annotations

import inspect

import pytest

from mailwarden.alerts import ports
from mailwarden.monitor.db import (
    CheckRepository,
    Database,
    InventoryRepository,
    MetaRepository,
    TokenCacheRepository,
)
from mailwarden.monitor.db_alerts import AlertRepository
from mailwarden.monitor.db_backoff import BackoffRepository
from mailwarden.monitor.db_history import HistoryRepository
from mailwarden.monitor.db_reauth import ReauthRepository
from mailwarden.monitor.db_rotation import RotationRepository
from mailwarden.monitor.db_signins import SignInRepository

REPOSITORIES = {
    "checks": CheckRepository,  # results, states and transitions
    "inventory": InventoryRepository,  # integrations and credential metadata
    "token_caches": TokenCacheRepository,
    "meta": MetaRepository,
    "alerts": AlertRepository,  # incidents and the outbox
    "history": HistoryRepository,
    "rotation": RotationRepository,
    "reauth": ReauthRepository,
    "signins": SignInRepository,
    "backoff": BackoffRepository,  # the waits queue mode's workers share
}
DATABASE = {"database", "engine", "close", "count"}  # the database's, delegated
PORT = sorted(name for name, member in vars(ports.AlertRepository).items()
              if callable(member) and not name.startswith("_"))


def test_the_store_is_its_repositories_and_nothing_else(store):
    public = {name for name in dir(store) if not name.startswith("_")}
    assert public == set(REPOSITORIES) | DATABASE, "a new method belongs in the repository of its port"
    assert type(store.database) is Database
    for name, cls in REPOSITORIES.items():
        repo = getattr(store, name)
        assert type(repo) is cls, name
        assert repo.db is store.database, f"{name} shares the store's one database"
    assert store.signins.meta is store.meta  # the one repository another one needs, passed explicitly


def test_the_alert_port_declares_the_methods_the_dispatcher_uses():
    assert {"fold_alerts", "claim_deliveries", "finish_delivery", "add_notification"} <= set(PORT)


@pytest.mark.parametrize("method", PORT)
def test_the_alert_repository_implements_the_alerts_port(store, method):
    assert callable(getattr(store.alerts, method, None)), f"store.alerts has no {method}"
    declared = list(inspect.signature(getattr(ports.AlertRepository, method)).parameters.values())[1:]  # no self
    actual = list(inspect.signature(getattr(store.alerts, method)).parameters.values())  # bound
    assert [(p.name, p.kind) for p in actual] == [(p.name, p.kind) for p in declared]
    for want, got in zip(declared, actual, strict=True):
        if want.default is inspect.Parameter.empty:
            assert got.default is inspect.Parameter.empty, f"{method}({got.name}) is required by the port"
        elif want.default is ...:
            assert got.default is not inspect.Parameter.empty, f"{method}({got.name}) has a default in the port"
        else:
            assert got.default == want.default, f"{method}({got.name})"
