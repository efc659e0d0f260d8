"""The overview for scale (issue 19, item 2): one search box (``q``), filters by tenant, system, app, tag and status,
and grouping (``group=tenant|system|app|status``) with a heading and counts per group, all in the address of a GET
form; bounded input. On a small fleet of its own (three tenants, three apps, six integrations, states written
straight into the store), so that every expected row and group is known here:

    tenant   app (Entra ID name, client id)                   integration flow      system     state
    alpha    alpha-crm ("Alphawind CRM connector", aaaa1111)  al-sales    app       Salesforce warn (throttled)
             alpha-crm                                        al-leads    app       Salesforce ok
    bravo    bravo-helpdesk ("Bravo Helpdesk Mail", bbbb2222) br-support  delegated Zendesk    ok
             bravo-helpdesk                                   br-billing  delegated Zendesk    fail (consent_missing)
    charlie  charlie-dms ("Charlie DMS", cccc3333)            ch-archive  app       enaio      fail (mailbox_not_found)
             charlie-dms                                      ch-scan     delegated (none)     error (timeout)

The browser test (Debian's chromium, as test_a11y_reflow.py) types a search and submits it with the keyboard, runs
axe-core, and photographs the page at 390 and 1400 px to tests/artifacts/screenshots/overview-search-*.png.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from markupsafe import escape
from starlette.testclient import TestClient

from mailwarden.checks import diagnoses
from mailwarden.monitor.web import views
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from tests.browser_fixtures import serving
from tests.dashboards.conftest import ARTIFACTS
from tests.dashboards.test_a11y import AXE, AXE_SHA256, AXE_VERSION, _audit

APPS = {"alpha-crm": ("alpha", "Alphawind CRM connector", "aaaa1111-0000-4000-8000-000000000001"),
        "bravo-helpdesk": ("bravo", "Bravo Helpdesk Mail", "bbbb2222-0000-4000-8000-000000000002"),
        "charlie-dms": ("charlie", "Charlie DMS", "cccc3333-0000-4000-8000-000000000003")}
# name: app, flow, mailbox, account, system, checks, (failing check, status, code) or None
FLEET = {
    "al-sales": ("alpha-crm", "app", "sales@alpha.example.com", None, "Salesforce", ["token", "graph_mail"],
                 ("graph_mail", "warn", "throttled")),
    "al-leads": ("alpha-crm", "app", "leads@alpha.example.com", None, "Salesforce", ["token", "graph_mail"], None),
    "br-support": ("bravo-helpdesk", "delegated", "support@bravo.example.com", "robot@bravo.example.com", "Zendesk",
                   ["token", "imap"], None),
    "br-billing": ("bravo-helpdesk", "delegated", "billing@bravo.example.com", "robot@bravo.example.com", "Zendesk",
                   ["token", "imap"], ("token", "fail", "consent_missing")),
    "ch-archive": ("charlie-dms", "app", "archive@charlie.example.com", None, "enaio", ["token", "ews"],
                   ("ews", "fail", "mailbox_not_found")),
    "ch-scan": ("charlie-dms", "delegated", "scan@charlie.example.com", "scanner@charlie.example.com", None,
                ["token", "imap"], ("imap", "error", "timeout")),
}
STATUS = {"al-sales": "warn", "al-leads": "ok", "br-support": "ok", "br-billing": "fail", "ch-archive": "fail",
          "ch-scan": "error"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(config, store) of the table above; results a minute old, the hourly availability rolled up."""
    from mailwarden.checks.base import Outcome, Status
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.db import open_store
    from mailwarden.monitor.runtime import integration_rows
    from mailwarden.state import Thresholds

    where = tmp_path_factory.mktemp("fleet")
    tenants = {t: {"tenant_id": f"00000000-0000-4000-8000-00000000000{i}", "monitor_app": f"{t}-monitor"}
               for i, t in enumerate(("alpha", "bravo", "charlie"))}
    apps = {f"{t}-monitor": {"tenant": t, "client_id": f"dddd0000-0000-4000-8000-00000000000{i}",
                             "secret": "env:FLEET_UNUSED_SECRET"} for i, t in enumerate(tenants)}
    for name, (tenant, title, client_id) in APPS.items():
        apps[name] = {"tenant": tenant, "client_id": client_id, "display_name": title,
                      "secret": "env:FLEET_UNUSED_SECRET"}
    integrations = []
    for name, (app, flow, mailbox, account, system, checks, _) in FLEET.items():
        item = {"name": name, "app": app, "flow": flow, "mailbox": mailbox, "checks": checks,
                "tags": ["crm" if app == "alpha-crm" else "ops"]}
        if account:
            item["account"] = account
        if system:
            item["system"] = system
        integrations.append(item)
    path = where / "fleet.yaml"
    path.write_text(yaml.safe_dump({"database": f"sqlite:///{where / 'fleet.db'}", "web": {"auth": "none"},
                                    "defaults": {"interval": "5m"}, "tenants": tenants, "apps": apps,
                                    "integrations": integrations}), encoding="utf-8")
    cfg = config_mod.load(path)
    now = datetime.now(UTC)
    store = open_store(f"sqlite:///{where / 'fleet.db'}")
    store.inventory.sync_integrations(integration_rows(cfg), now - timedelta(days=1))
    for name, (_, _, _, _, _, checks, bad) in FLEET.items():
        for kind in checks:
            status, code = (bad[1], bad[2]) if bad and bad[0] == kind else ("ok", None)
            store.checks.record_result(integration=name, check=kind, checked_at=now - timedelta(minutes=1),
                                       outcome=Outcome(Status(status), code, f"{kind} {status}", latency_ms=50.0),
                                       thresholds=Thresholds(1, 1))
    store.history.rollup_history(now + timedelta(minutes=10))
    try:
        yield cfg, store
    finally:
        store.close()


@pytest.fixture(scope="module")
def web(fleet):
    cfg, store = fleet
    with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080",
                    raise_server_exceptions=False) as c:
        yield c


def names(html: str) -> list[str]:
    return re.findall(r'<tr class="row[^>]*data-integration="([^"]+)"', html)


def grouped(html: str) -> list[tuple[str, str, list[str]]]:
    """(heading, counts text, integrations) of each group, in the page's order."""
    out = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", html, re.S):
        head = re.search(r'<tr class="grouphead">.*?<h3[^>]*>(.*?)</h3>(.*?)</td></tr>', body, re.S)
        assert head, body[:300]
        text = re.sub(r"<[^>]+>", "", head.group(2))
        out.append((re.sub(r"<[^>]+>", "", head.group(1)), " ".join(text.split()), names(body)))
    return out


def test_the_fleet_is_as_the_table_says(web):
    html = web.get("/").text
    assert dict(re.findall(r'data-integration="([^"]+)" data-status="([^"]+)"', html)) == STATUS
    assert "<tbody>" in html and 'class="grouphead"' not in html  # not grouped unless asked
    # one form: the search box, then every filter and the grouping, each labelled
    form = html[html.index('<form class="filters" method="get" action="/"'):]
    form = form[:form.index("</form>")]
    assert re.findall(r'<label[^>]*>(\w[\w ]*) <(?:input|select)[^>]* name="(\w+)"', form) == [
        ("Search", "q"), ("Tenant", "tenant"), ("System", "system"), ("App", "app"), ("Tag", "tag"),
        ("Status", "status"), ("Group by", "group")]
    assert re.findall(r"<option ?>([^<]+)</option>", form[form.index('name="system"'):])[:3] == [
        "enaio", "Salesforce", "Zendesk"]  # the systems named, as people sort them
    assert '<option value="alpha-crm" >Alphawind CRM connector (alpha-crm)</option>' in form


# -- search: each field finds its rows and nothing else ------------------------------------------------------------
consent, not_found = diagnoses.get("consent_missing").title, diagnoses.get("mailbox_not_found").title


@pytest.mark.parametrize(("q", "found"), [
    ("br-supp", {"br-support"}),  # the integration's name
    ("BILLING@bravo", {"br-billing"}),  # the mailbox, in another case
    ("scanner@", {"ch-scan"}),  # the signing-in account (its mailbox is scan@)
    ("robot@bravo.example.com", {"br-support", "br-billing"}),  # an account shared by two
    ("alpha-crm", {"al-sales", "al-leads"}),  # the app's name in the config
    ("charlie dms", {"ch-archive", "ch-scan"}),  # its name in Entra ID
    ("BBBB2222-0000", {"br-support", "br-billing"}),  # its client id
    ("salesforce", {"al-sales", "al-leads"}),  # the consuming system
    ("consent_missing", {"br-billing"}),  # a diagnosis code
    (consent.upper(), {"br-billing"}),  # and its title
    (not_found.lower(), {"ch-archive"}),
    ("throttled", {"al-sales"}),
    ("  enaio ", {"ch-archive"}),  # trimmed
    ("nothing-like-this", set()),
])
def test_search_by_each_field_finds_the_row_and_nothing_else(web, q, found):
    r = web.get("/", params={"q": q})
    assert r.status_code == 200
    assert set(names(r.text)) == found, (q, names(r.text))
    # the box keeps what was searched; the page says how many of all are shown
    assert f'name="q" value="{escape(q.strip())}"' in r.text
    assert f"{len(found)} of {len(FLEET)} shown" in r.text
    if not found:
        assert "No integration matches." in r.text


def test_search_matches_what_the_views_say():
    v = views.IntegrationView("x-1", "t", "app-a", "Sys", "app", "m@x.example", [], False, [], account="who@x",
                              app_title="App A", client_id="abcd-ef")
    def finds(q: str) -> bool:
        return views.select_views([v], q=q) == [v]

    assert all(finds(q) for q in ("X-1", "m@X", "who@", "app-a", "app a", "ABCD-E", "sys"))
    assert not finds("x-1m@x") and not finds("example who")  # one field at a time
    assert not finds("zzz") and not finds("t")  # the tenant is a filter, not searched


# -- filters and grouping, combined, in the address ----------------------------------------------------------------
@pytest.mark.parametrize(("query", "found"), [
    ({"system": "Zendesk"}, ["br-billing", "br-support"]),
    ({"app": "charlie-dms"}, ["ch-archive", "ch-scan"]),
    ({"app": "charlie-dms", "status": "fail"}, ["ch-archive"]),
    ({"system": "Salesforce", "q": "leads"}, ["al-leads"]),
    ({"tenant": "bravo", "q": "billing", "status": "problem"}, ["br-billing"]),
    ({"tenant": "alpha", "system": "Zendesk"}, []),
    ({"tag": "ops", "system": "enaio"}, ["ch-archive"]),
])
def test_filters_combine_worst_first(web, query, found):
    html = web.get("/", params=query).text
    assert names(html) == found
    for key, value in query.items():  # the form shows what is applied
        if key == "q":
            assert f'name="q" value="{value}"' in html
        else:
            select = html[html.index(f'<select name="{key}">'):]
            select = select[:select.index("</select>")]
            assert re.search(rf'<option (value="{value}" )?selected>', select) or \
                f'value="{value}" selected' in select, (key, select[:400])


GROUPS = {
    "tenant": [("charlie", "1 fail · 1 error of 2", ["ch-archive", "ch-scan"]),
               ("bravo", "1 fail · 1 ok of 2", ["br-billing", "br-support"]),
               ("alpha", "1 warn · 1 ok of 2", ["al-sales", "al-leads"])],
    "system": [("enaio", "1 fail of 1", ["ch-archive"]),
               ("Zendesk", "1 fail · 1 ok of 2", ["br-billing", "br-support"]),
               ("no system named", "1 error of 1", ["ch-scan"]),
               ("Salesforce", "1 warn · 1 ok of 2", ["al-sales", "al-leads"])],
    "app": [("Charlie DMS (charlie-dms)", "1 fail · 1 error of 2", ["ch-archive", "ch-scan"]),
            ("Bravo Helpdesk Mail (bravo-helpdesk)", "1 fail · 1 ok of 2", ["br-billing", "br-support"]),
            ("Alphawind CRM connector (alpha-crm)", "1 warn · 1 ok of 2", ["al-sales", "al-leads"])],
    "status": [("fail", "2 fail of 2", ["br-billing", "ch-archive"]), ("error", "1 error of 1", ["ch-scan"]),
               ("warn", "1 warn of 1", ["al-sales"]), ("ok", "2 ok of 2", ["al-leads", "br-support"])],
}


@pytest.mark.parametrize("by", list(GROUPS))
def test_groups_have_a_heading_and_their_counts_worst_group_first(web, by):
    html = web.get("/", params={"group": by}).text
    assert grouped(html) == GROUPS[by]
    assert f"by {by}, worst first" in html


def test_grouping_counts_only_the_rows_shown_and_links_keep_the_search_and_filters(web):
    r = web.get("/", params={"q": "example.com", "status": "problem", "group": "tenant"})
    assert grouped(r.text) == [("charlie", "1 fail · 1 error of 2", ["ch-archive", "ch-scan"]),
                               ("bravo", "1 fail of 1", ["br-billing"]), ("alpha", "1 warn of 1", ["al-sales"])]
    # each heading narrows to its group and keeps the rest of the address
    links = re.findall(r'<h3[^>]*><a href="([^"]+)"[^>]*>([^<]+)</a></h3>', r.text)
    assert [t for _, t in links] == ["charlie", "bravo", "alpha"]
    href = links[1][0].replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query) == {"q": ["example.com"], "tenant": ["bravo"], "status": ["problem"],
                                              "group": ["tenant"]}
    again = web.get(href)
    assert grouped(again.text) == [("bravo", "1 fail of 1", ["br-billing"])]
    # the group and status selects show the choice; "clear" drops all of it
    assert '<option selected>tenant</option>' in r.text and '<option value="problem" selected>' in r.text
    assert '<a href="/">clear</a>' in r.text
    # a group without a value (no system named) has a heading without a link: no filter selects it
    sys_page = web.get("/", params={"group": "system"}).text
    assert "<h3" in sys_page and re.search(r'<h3 id="g-\d+">no system named</h3>', sys_page)


def test_groups_of_the_views_sort_worst_first():
    def v(name: str, tenant: str, status: str, stale: bool = False) -> views.IntegrationView:
        return views.IntegrationView(name, tenant, "a", None, "app", "m", [], False, [], status=status, stale=stale)

    items = [v("1", "b", "warn"), v("2", "a", "ok"), v("3", "c", "warn", stale=True), v("4", "d", "fail"),
             v("5", "e", "ok"), v("6", "e", "fail"), v("7", "e", "fail")]
    got = [(g.key, g.counts, g.stale) for g in views.groups(items, "tenant")]
    assert got == [("e", {"fail": 2, "ok": 1}, 0), ("d", {"fail": 1}, 0), ("c", {"warn": 1}, 1),
                   ("b", {"warn": 1}, 0), ("a", {"ok": 1}, 0)]


# -- bad input: a clear 400, or ignored with a message; never a 500 ------------------------------------------------
@pytest.mark.parametrize(("query", "says"), [
    ({"q": "x" * 1000}, "the search (q) is 1,000 characters long; at most 200 are taken"),
    ({"q": "consent\x00"}, "control character (U+0000)"),
    ({"q": "a\nb"}, "control character (U+000A)"),
    ({"q": "a\u202eb"}, "control character (U+202E)"),  # right-to-left override (Cf)
    ({"tenant": "t" * 300}, "tenant is 300 characters long"),
    ({"system": "\x1b[31m"}, "system holds a control character (U+001B)"),
])
def test_bad_input_is_a_clear_400(web, query, says):
    r = web.get("/", params=query)
    assert r.status_code == 400, (query, r.status_code)
    assert r.headers["content-type"].startswith("text/html") and "Bad request" in r.text
    assert str(escape(says)) in r.text, r.text[-1500:]


@pytest.mark.parametrize(("query", "says"), [
    ({"group": "owner"}, "grouping &#39;owner&#39; is not known and was ignored: one of tenant, system, app, status"),
    ({"group": "<script>" * 20}, "grouping &#39;" + "&lt;script&gt;" * 5 + "...&#39; is not known"),  # 40 shown
    ({"status": "broken"}, "status &#39;broken&#39; is not known and was ignored"),
])
def test_unknown_choices_are_ignored_with_a_message(web, query, says):
    r = web.get("/", params=query)
    assert r.status_code == 200
    assert says in r.text
    assert '<p class="notice" role="status">' in r.text
    assert set(names(r.text)) == set(FLEET) and 'class="grouphead"' not in r.text
    assert "<script>" not in r.text.split("<body", 1)[1].replace('<script src="/static/', "")


def test_odd_addresses_are_never_a_500(web):
    for target in ("/?q=%FF%FE", "/?q=" + "%F0%9F%93%A7" * 50, "/?q=&tenant=&group=", "/?q=x&q=y",
                   "/?q=" + "y" * 9000, "/?group=tenant&group=app", "/?app=nosuch&group=app"):
        r = web.get(target)
        assert r.status_code in (200, 400, 414), (target, r.status_code)
    assert web.get("/?q=" + "%F0%9F%93%A7" * 50).status_code == 200  # 50 characters, whatever their bytes
    assert names(web.get("/?app=nosuch&group=app").text) == []


# -- the browser: type, submit with the keyboard, axe-core, screenshots ----------------------------------------
SHOTS = ARTIFACTS / "screenshots"


def test_search_by_keyboard_in_a_browser_is_accessible_and_reflows(browser, fleet):
    cfg, store = fleet
    app = create_app(cfg, store, access=Access(mode="none"))
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    with serving(app) as url:
        for width in (390, 1400):
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                page.add_init_script(path=str(AXE))
                page.goto(url + "/?group=tenant")
                # by keyboard only: Tab to the search box, type, Enter submits the GET form
                for _ in range(30):
                    page.keyboard.press("Tab")
                    if page.evaluate("document.activeElement.name === 'q'"):
                        break
                assert page.evaluate("document.activeElement.name") == "q"
                page.keyboard.type("Consent")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                query = parse_qs(urlsplit(page.url).query)
                assert query["q"] == ["Consent"] and query["group"] == ["tenant"], page.url
                assert page.locator("tr.row").evaluate_all("rs => rs.map(r => r.dataset.integration)") == [
                    "br-billing"]
                assert page.locator("input[name=q]").input_value() == "Consent"
                assert page.locator("tr.grouphead h3").all_inner_texts() == ["bravo"]
                # the controls wrap: nothing wider than the window
                scroll, client = page.evaluate(
                    "[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")
                assert scroll == client, (width, scroll, client)
                assert page.evaluate("typeof axe !== 'undefined' && axe.version") == AXE_VERSION
                violations = _audit(page)
                assert violations == [], json.dumps(violations, indent=1)
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SHOTS / f"overview-search-{width}.png"), full_page=True)
                # a select changed with the keyboard waits for "Apply" (no reload at each arrow key)
                before = page.url
                page.focus("select[name=status]")
                page.keyboard.press("ArrowDown")
                page.wait_for_timeout(400)
                assert page.url == before and page.locator("select[name=status]").input_value() == "problem"
                page.keyboard.press("Tab")  # to "Group by", then "Apply"
                page.keyboard.press("Tab")
                assert page.evaluate("document.activeElement.textContent") == "Apply"
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                query = parse_qs(urlsplit(page.url).query)
                assert query == {"q": ["Consent"], "status": ["problem"], "group": ["tenant"]}, page.url
                # the whole fleet grouped (the counts, the headings), photographed too, and axe-clean
                page.goto(url + "/?group=tenant")
                assert _audit(page) == []
                assert page.evaluate("document.scrollingElement.scrollWidth") == client
                page.screenshot(path=str(SHOTS / f"overview-grouped-{width}.png"), full_page=True)
                assert errors == [], errors
            finally:
                context.close()
