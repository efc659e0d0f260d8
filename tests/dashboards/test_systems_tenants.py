"""The consuming systems' pages and the tenants page (issue 19, item 7), on a fleet of their own (states written
straight into the store, incidents opened by the dispatcher), so every row, count and order is known here:

    tenant   monitor_app, sign-in log   integration app            system      state
    alpha    yes, read (poll ok)        al-crm      alpha-crm      Salesforce  warn (throttled)
                                        al-leads    alpha-crm      Salesforce  ok, consumer ok
    bravo    yes, unlicensed (refused)  br-support  bravo-mail     Zendesk     fail (consent_missing), consumer fail
                                        br-billing  bravo-mail     Zendesk     fail (consent_missing), no consumer
                                        br-archive  bravo-archive  Zendesk     warn: consumer unknown
    charlie  none                       ch-dms      charlie-dms    enaio       fail (mailbox_not_found)
                                        ch-scan     charlie-dms    enaio       ok
    delta    yes, not polled yet        de-desk     delta-desk     Zendesk     ok
    echo     yes                        (none)

/tenants, worst first: bravo (2 fail), charlie (1 fail), alpha (a warn), delta (ok), echo (no integration).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import quote

import pytest
import yaml
from starlette.testclient import TestClient

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access

NOW = datetime.now(UTC)
TENANTS = ("alpha", "bravo", "charlie", "delta", "echo")
APPS = {"alpha-crm": "alpha", "bravo-mail": "bravo", "bravo-archive": "bravo", "charlie-dms": "charlie",
        "delta-desk": "delta"}
# name: app, system, checks, {check: (status, code, summary)} for those not ok
FLEET = {
    "al-crm": ("alpha-crm", "Salesforce", ["token", "graph_mail"], {"graph_mail": ("warn", "throttled", "429")}),
    "al-leads": ("alpha-crm", "Salesforce", ["token", "graph_mail", "consumer"], {
        "consumer": ("ok", None, "Salesforce signed in 12 times, last at 09:58 UTC with key 1f2e")}),
    "br-support": ("bravo-mail", "Zendesk", ["token", "imap", "consumer"], {
        "token": ("fail", "consent_missing", "consent removed"),
        "consumer": ("fail", "consumer_signin_failed", "Zendesk itself fails to sign in: AADSTS65001, 3 times since "
                                                       "09:40 UTC")}),
    "br-billing": ("bravo-mail", "Zendesk", ["token", "imap"],
                   {"token": ("fail", "consent_missing", "consent removed")}),
    "br-archive": ("bravo-archive", "Zendesk", ["token", "imap", "consumer"], {
        "consumer": ("warn", "consumer_unknown", "Zendesk's own sign-ins are unknown (unlicensed): the tenant has no "
                                                 "Entra ID P1 or P2 licence")}),
    "ch-dms": ("charlie-dms", "enaio", ["token", "ews"], {"ews": ("fail", "mailbox_not_found", "no mailbox")}),
    "ch-scan": ("charlie-dms", "enaio", ["token", "ews"], {}),
    "de-desk": ("delta-desk", "Zendesk", ["token", "imap"], {}),
}


def tid(tenant: str) -> str:
    return f"00000000-0000-4000-8000-00000000000{TENANTS.index(tenant)}"


def client_id(app: str) -> str:
    return f"aaaa0000-0000-4000-8000-00000000000{list(APPS).index(app)}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.runtime import integration_rows
    from mailwarden.state import Thresholds

    where = tmp_path_factory.mktemp("fleet")
    tenants = {t: {"tenant_id": tid(t)} | ({} if t == "charlie" else {"monitor_app": f"{t}-monitor"})
               for t in TENANTS}
    apps = {f"{t}-monitor": {"tenant": t, "client_id": f"dddd0000-0000-4000-8000-00000000000{i}",
                             "secret": "env:FLEET_UNUSED_SECRET"} for i, t in enumerate(TENANTS) if t != "charlie"}
    apps |= {a: {"tenant": t, "client_id": client_id(a), "secret": "env:FLEET_UNUSED_SECRET"} for a, t in APPS.items()}
    integrations = [{"name": n, "app": app, "flow": "app", "mailbox": f"{n}@example.com", "system": system,
                     "checks": checks} for n, (app, system, checks, _) in FLEET.items()]
    path = where / "fleet.yaml"
    path.write_text(yaml.safe_dump({"database": f"sqlite:///{where / 'fleet.db'}", "web": {"auth": "none"},
                                    "defaults": {"interval": "5m"}, "tenants": tenants, "apps": apps,
                                    "integrations": integrations}), encoding="utf-8")
    cfg = config_mod.load(path)
    store = open_store(f"sqlite:///{where / 'fleet.db'}")
    store.inventory.sync_integrations(integration_rows(cfg), NOW - timedelta(days=1))
    at = NOW - timedelta(minutes=2)
    for name, (_, _, checks, bad) in FLEET.items():
        for kind in checks:
            status, code, summary = bad.get(kind, ("ok", None, f"{kind} ok"))
            store.checks.record_result(integration=name, check=kind, checked_at=at, thresholds=Thresholds(1, 1),
                                       outcome=Outcome(Status(status), code, summary, latency_ms=50.0))
    make_dispatcher(cfg, store).run_once(at + timedelta(seconds=5))
    polls = [{"tenant_id": tid("alpha"), "event_type": "servicePrincipal", "app_id": client_id("alpha-crm"),
              "state": "ok", "read_until": NOW - timedelta(minutes=1), "covered_from": NOW - timedelta(days=1)},
             {"tenant_id": tid("bravo"), "event_type": "servicePrincipal", "app_id": client_id("bravo-mail"),
              "state": "unlicensed", "note": "tenant bravo has no Entra ID P1 or P2 licence: its sign-in log cannot "
                                             "be read"}]
    store.signins.save_signin_polls(polls)
    try:
        yield cfg, store
    finally:
        store.close()


@pytest.fixture(scope="module")
def web(fleet):
    cfg, store = fleet
    with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
        yield c


def rows(html: str, attr: str) -> list[str]:
    return re.findall(rf'<tr class="row[^"]*" {attr}="([^"]+)"', html)


def row_of(html: str, attr: str, key: str) -> str:
    part = html[html.index(f'{attr}="{key}"'):]
    return html_text(part[:part.index("</tr>")])


def html_text(fragment: str) -> str:
    return unescape(" ".join(re.sub(r"<[^>]+>", " ", fragment).split()))


def test_a_system_page_lists_only_that_systems_integrations_worst_first_with_counts(web):
    page = web.get("/systems/Zendesk")
    assert page.status_code == 200
    assert rows(page.text, "data-integration") == ["br-billing", "br-support", "br-archive", "de-desk"]
    counts = " ".join(re.sub(r"<[^>]+>", " ", re.search(r'<p class="counts-line".*?</p>', page.text, re.S)
                             .group(0)).split())
    assert counts.startswith("2 fail · 1 warn · 1 ok 4 integrations")
    assert "own sign-ins: 1 fail , 1 warn , 2 without a consumer check" in counts
    # the diagnosis of each failing one, with its incident
    billing = row_of(page.text, "data-integration", "br-billing")
    assert "Admin consent missing" in billing and "consent_missing" in billing and "incident #" in billing
    # the other systems' integrations are not on it
    for other in ("al-crm", "al-leads", "ch-dms", "ch-scan"):
        assert other not in page.text
    assert 'href="/?system=Zendesk"' in page.text  # the same set on the overview


def test_each_integration_shows_the_consuming_systems_sign_in_state_or_why_there_is_none(web):
    page = web.get("/systems/Zendesk").text
    assert "Zendesk itself fails to sign in: AADSTS65001, 3 times since 09:40 UTC" in row_of(
        page, "data-integration", "br-support")
    assert "no sign-in evidence: this integration has no consumer check" in row_of(page, "data-integration",
                                                                                  "br-billing")
    assert "Zendesk's own sign-ins are unknown (unlicensed)" in row_of(page, "data-integration", "br-archive")
    # a tenant whose log is not read says why, beside the missing check
    enaio = row_of(web.get("/systems/enaio").text, "data-integration", "ch-dms")
    assert "has no consumer check" in enaio and "tenant charlie names no monitor_app" in enaio
    assert "Salesforce signed in 12 times" in row_of(web.get("/systems/Salesforce").text, "data-integration",
                                                     "al-leads")


def test_a_system_page_narrows_to_one_app_and_an_app_page_lists_that_apps_integrations(web):
    page = web.get("/systems/Zendesk", params={"app": "bravo-mail"}).text
    assert rows(page, "data-integration") == ["br-billing", "br-support"]
    assert '<option value="bravo-mail" selected>' in page
    assert rows(web.get("/apps/bravo-archive").text, "data-integration") == ["br-archive"]
    app_page = web.get("/apps/charlie-dms").text
    assert rows(app_page, "data-integration") == ["ch-dms", "ch-scan"] and client_id("charlie-dms") in app_page
    assert '<form class="filters"' not in app_page and 'href="/systems/enaio"' in app_page  # its system, linked
    assert web.get("/systems/Nowhere").status_code == 404
    assert web.get("/apps/nosuch").status_code == 404
    assert web.get("/systems/" + "x" * 300).status_code == 400


def test_the_systems_page_lists_each_system_worst_first_with_links(web):
    page = web.get("/systems").text
    assert rows(page, "data-system") == ["Zendesk", "enaio", "Salesforce"]
    for system in ("Zendesk", "enaio", "Salesforce"):
        assert f'href="/systems/{quote(system)}"' in page
        assert web.get(f"/systems/{quote(system)}").status_code == 200
    assert "2 fail · 1 warn · 1 ok of 4" in row_of(page, "data-system", "Zendesk")


def test_tenants_worst_first_with_open_incidents_counts_and_sign_in_evidence(fleet, web):
    _, store = fleet
    page = web.get("/tenants")
    assert page.status_code == 200
    assert rows(page.text, "data-tenant") == ["bravo", "charlie", "alpha", "delta", "echo"]
    open_by = {}
    for inc in store.alerts.incidents("open"):
        names = set(inc.affected) | {m["integration"] for m in inc.members}
        open_by.setdefault(FLEET[sorted(names)[0]][0].split("-")[0], []).append(inc.id)
    assert set(open_by) == {"bravo", "charlie"}
    bravo = row_of(page.text, "data-tenant", "bravo")
    assert f"{len(open_by['bravo'])} open" in bravo and "2 fail · 1 warn of 3" in bravo
    assert all(f"#{i}" in bravo for i in open_by["bravo"])
    assert "not readable (unlicensed): tenant bravo has no Entra ID P1 or P2 licence" in bravo
    charlie = row_of(page.text, "data-tenant", "charlie")
    assert "1 open" in charlie and "tenant charlie names no monitor_app" in charlie
    alpha = row_of(page.text, "data-tenant", "alpha")
    assert "none" in alpha and "1 warn · 1 ok of 2" in alpha and "read, up to" in alpha
    assert "not read yet" in row_of(page.text, "data-tenant", "delta")
    assert "none configured" in row_of(page.text, "data-tenant", "echo")
    # links into the overview and the incidents, filtered to the tenant
    assert 'href="/?tenant=bravo"' in page.text and 'href="/incidents?tenant=bravo&amp;status=open"' in page.text
    assert "(" + str(sum(len(v) for v in open_by.values())) + " open) Tenants" in page.text


def test_every_page_links_to_systems_and_tenants_in_its_navigation(web):
    for path in ("/", "/incidents", "/systems", "/tenants", "/systems/Zendesk"):
        r = web.get(path)
        html = r.text
        assert r.status_code == 200, path
        assert 'class="navlink" href="/systems"' in html and 'class="navlink" href="/tenants"' in html, path


def test_with_1000_integrations_in_100_tenants_the_pages_read_in_bulk(tmp_path):
    """1,000 integrations in 100 tenants, each with a consumer check: /tenants and a system page of 100 integrations
    make the same number of statements as with 10 (no query per integration or per tenant), and stay fast."""
    from sqlalchemy import event

    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.runtime import integration_rows
    from mailwarden.state import Thresholds

    def world(n_tenants: int, per: int):
        tenants = {f"t{i:03d}": {"tenant_id": f"00000000-0000-4000-8000-{i:012d}", "monitor_app": f"m{i:03d}"}
                   for i in range(n_tenants)}
        apps = {f"m{i:03d}": {"tenant": f"t{i:03d}", "client_id": f"dddd0000-0000-4000-8000-{i:012d}",
                              "secret": "env:UNUSED"} for i in range(n_tenants)}
        apps |= {f"a{i:03d}": {"tenant": f"t{i:03d}", "client_id": f"aaaa0000-0000-4000-8000-{i:012d}",
                               "secret": "env:UNUSED"} for i in range(n_tenants)}
        integ = [{"name": f"i{i:03d}-{j:02d}", "app": f"a{i:03d}", "flow": "app", "mailbox": f"m{j}@t{i}.example.com",
                  "system": f"system {j % 10}", "checks": ["token", "graph_mail", "consumer"]}
                 for i in range(n_tenants) for j in range(per)]
        where = tmp_path / f"w{n_tenants}"
        where.mkdir()
        path = where / "c.yaml"
        path.write_text(yaml.safe_dump({"database": f"sqlite:///{where / 'db'}", "web": {"auth": "none"},
                                        "tenants": tenants, "apps": apps, "integrations": integ}), encoding="utf-8")
        cfg = config_mod.load(path)
        store = open_store(f"sqlite:///{where / 'db'}")
        store.inventory.sync_integrations(integration_rows(cfg), NOW - timedelta(days=1))
        for item in integ:
            for kind in item["checks"]:
                bad = kind == "token" and item["name"].endswith("-03")
                store.checks.record_result(integration=item["name"], check=kind, checked_at=NOW - timedelta(minutes=1),
                                           outcome=Outcome(Status.FAIL if bad else Status.OK,
                                                           "consent_missing" if bad else None, "x"),
                                           thresholds=Thresholds(1, 1))
        make_dispatcher(cfg, store).run_once(NOW)
        return cfg, store

    def measure(cfg, store, path):
        statements = []

        def count(*_):
            statements.append(1)

        engine = store.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            with TestClient(create_app(cfg, store, access=Access(mode="none")),
                            base_url="http://127.0.0.1:8080") as c:
                started = time.perf_counter()
                r = c.get(path)
                took = time.perf_counter() - started
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert r.status_code == 200, r.text[:500]
        return len(statements), took, len(r.content)

    small = world(2, 5)
    big = world(100, 10)
    try:
        for path in ("/tenants", "/systems", "/systems/system%203"):
            few, _, _ = measure(*small, path)
            many, took, size = measure(*big, path)
            assert many == few, (path, few, many)
            assert took < 3.0, (path, took)  # a 2-core machine under load; the figures are in the report
            print(f"{path}: {many} statements, {took * 1000:.0f} ms, {size // 1024} KB")
    finally:
        small[1].close()
        big[1].close()
