"""The application's side of the alerts layer's ports (``alerts.ports``), and the one place a Dispatcher is made.

The alerts layer imports nothing of the application: what a notice says beyond its incident (the tenant's service
health, the directory changes that explain a failure, which credential the config uses) comes through ``Sources``,
implemented here from the store and the config; the store's alert repository (``store.alerts``) is its
``AlertRepository``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailwarden.alerts.dispatcher import Dispatcher
from mailwarden.monitor import audits, service_health
from mailwarden.monitor.config import Config
from mailwarden.monitor.db import Store


class StoreSources:
    """``alerts.ports.Sources`` read from the store (what the sign-in poll stored) and the config."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store

    def service_health(self, tenant_id: str) -> dict | None:
        return service_health.load(self.store, tenant_id)

    def directory_audits(self, incidents: Iterable[Any]) -> dict[int, list]:
        return dict(audits.incident_evidence(self.store, self.config, incidents))

    def configured_credential(self, app_name: str) -> str | None:
        return configured_credential(self.config, app_name)


def make_dispatcher(config: Config, store: Store, **kw: Any) -> Dispatcher:
    """A dispatcher wired to this application: ``kw`` as ``Dispatcher`` takes them (clock, reauth_urls, worker)."""
    return Dispatcher(config, store.alerts, sources=StoreSources(config, store), **kw)


def configured_credential(config: Config, app_name: str) -> str | None:
    """Which credential of the app the config uses: its secret's hint (first three characters, as Graph shows) or
    its certificate's thumbprint; None when the reference does not resolve (the incident then names the app)."""
    from mailwarden.errors import SecretReferenceError
    from mailwarden.monitor.config import resolve_ref
    from mailwarden.monitor.tokens import certificate_thumbprint

    app = config.apps.get(app_name)
    if app is None:
        return None
    try:
        if app.secret:
            return "hint:" + resolve_ref(app.secret, config.base_dir, what=f"apps.{app_name}.secret")[:3]
        if app.certificate is not None:
            cert = resolve_ref(app.certificate.cert, config.base_dir, what=f"apps.{app_name}.certificate.cert")
            return "cert:" + certificate_thumbprint(cert)
    except (SecretReferenceError, ValueError):
        return None
    return None


