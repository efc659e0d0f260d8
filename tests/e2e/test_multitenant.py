"""Multitenant app registrations (issue 17): one app registered in its vendor's (home) tenant, used for mailboxes in a
customer tenant that consented to it. mailwarden asks tokens in the integration's tenant, reads the app's credentials
in the home tenant (its monitor app there), and where the customer tenant has no service principal for the app says
so (``app_not_in_tenant``, with that tenant's admin-consent link), instead of "application not found" (the app
exists)."""

from __future__ import annotations

import asyncio
import uuid

import yaml

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runtime import open_runtime


def _tenants(sandbox):
    vendor, customer, other = (str(uuid.uuid4()) for _ in range(3))
    app_id, monitor_id = str(uuid.uuid4()), str(uuid.uuid4())
    secret, monitor_secret = f"ven8Q~{uuid.uuid4().hex}", f"mon8Q~{uuid.uuid4().hex}"
    sandbox.control.add_tenant(id=vendor, domain=f"v{vendor[:8]}.onmicrosoft.com", apps=[
        {"app_id": app_id, "display_name": "Contact center (multitenant)", "sign_in_audience": "AzureADMultipleOrgs",
         "secrets": [{"value": secret, "display_name": "vendor", "start": "-10d", "end": "+300d"}],
         "application_permissions": {"graph": ["Mail.ReadWrite", "Mail.Send"]}},
        {"app_id": monitor_id, "display_name": "mailwarden monitor", "secrets": [{"value": monitor_secret}],
         "application_permissions": {"graph": ["Application.Read.All"]}}])
    domain = f"c{customer[:8]}.onmicrosoft.com"
    sandbox.control.add_tenant(
        id=customer, domain=domain,
        service_principals=[{"app_id": app_id, "home_tenant": vendor,
                             "application_permissions": {"graph": ["Mail.ReadWrite", "Mail.Send"]}}],
        exchange={"mailboxes": [{"address": f"queue@{domain}", "type": "shared"}]})
    sandbox.control.add_tenant(id=other, domain=f"o{other[:8]}.onmicrosoft.com",
                               exchange={"mailboxes": [{"address": f"queue@o{other[:8]}.onmicrosoft.com",
                                                        "type": "shared"}]})
    return vendor, customer, other, app_id, monitor_id, secret, monitor_secret, domain


def test_a_multitenant_app_is_checked_in_the_customer_tenant_and_its_secret_read_at_home(sandbox, tmp_path):
    vendor, customer, other, app_id, monitor_id, secret, monitor_secret, domain = _tenants(sandbox)
    (tmp_path / "app.secret").write_text(secret)
    (tmp_path / "monitor.secret").write_text(monitor_secret)
    endpoints = {k: v for k, v in sandbox.endpoints.items()
                 if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")}
    path = tmp_path / "mailwarden.yaml"
    path.write_text(yaml.safe_dump({
        "database": "sqlite:///mailwarden.db", "cloud": "custom", "endpoints": endpoints,
        "tenants": {"vendor": {"tenant_id": vendor, "monitor_app": "monitor"}, "customer": {"tenant_id": customer},
                    "other": {"tenant_id": other}},
        "apps": {"cc": {"tenant": "vendor", "client_id": app_id, "secret": "file:app.secret"},
                 "monitor": {"tenant": "vendor", "client_id": monitor_id, "secret": "file:monitor.secret"}},
        "integrations": [
            {"name": "customer-queue", "app": "cc", "tenant": "customer", "flow": "app", "mailbox": f"queue@{domain}",
             "system": "Sinch Contact Center", "checks": {"token": {}, "graph_mail": {}, "secret_expiry": {}}},
            {"name": "other-queue", "app": "cc", "tenant": "other", "flow": "app",
             "mailbox": f"queue@o{other[:8]}.onmicrosoft.com", "system": "Sinch Contact Center",
             "checks": {"token": {}, "secret_expiry": {}}},
        ]}))
    cfg = config_mod.load(path)
    runtime = open_runtime(cfg)
    try:
        selection = [("customer-queue", ["token", "graph_mail", "secret_expiry"]),
                     ("other-queue", ["token", "secret_expiry"])]
        got = {(r.integration, r.check): r for r in asyncio.run(runtime.runner.run_many(selection))}
        rows = {k: r.as_json(cfg) for k, r in got.items()}
    finally:
        runtime.close()
    # the customer tenant: a token there (its service principal holds the consent), the mailbox read there
    for check in ("token", "graph_mail", "secret_expiry"):
        assert rows[("customer-queue", check)]["status"] == "ok", rows[("customer-queue", check)]
    assert rows[("customer-queue", "token")]["details"]["tenant"] == "customer"
    # the app's secret is read in its home tenant, whichever tenant the integration is in
    assert rows[("other-queue", "secret_expiry")]["status"] == "ok"
    # no service principal in the other tenant: not "application not found", and the fix is that tenant's consent
    token = rows[("other-queue", "token")]
    assert (token["status"], token["code"]) == ("fail", "app_not_in_tenant"), token
    consent = f"{sandbox.endpoints['authority']}/{other}/adminconsent?client_id={app_id}"
    assert any(consent in step for step in token["fix"]), token["fix"]
    assert not any(vendor in step and "adminconsent" in step for step in token["fix"])
    assert secret not in repr(rows) and monitor_secret not in repr(rows)


def test_an_integration_naming_an_unknown_tenant_is_a_config_error(tmp_path):
    path = tmp_path / "mailwarden.yaml"
    path.write_text(yaml.safe_dump({
        "tenants": {"vendor": {"tenant_id": str(uuid.uuid4())}},
        "apps": {"cc": {"tenant": "vendor", "client_id": str(uuid.uuid4()), "secret": "env:X"}},
        "integrations": [{"name": "q", "app": "cc", "tenant": "custmer", "flow": "app", "mailbox": "q@c.com"}]}))
    try:
        config_mod.load(path)
    except config_mod.ConfigError as exc:
        assert "integrations[0].tenant" in exc.message() and "custmer" in exc.message()
    else:
        raise AssertionError("an unknown tenant was accepted")
