"""`/incidents`: the open incidents and those resolved within the last 7 days, filterable in the URL, with their
members, times and a link to each integration; behind the same login, CSRF and headers as every page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.web.auth import Access
from mailwarden.state import Thresholds
from tests.dashboards.conftest import csrf_of, make_app, small_store

NOW = datetime.now(UTC)


def rows(html: str) -> list[tuple[int, str]]:
    return [(int(i), s) for i, s in re.findall(r'data-incident="(\d+)" data-status="(\w+)"', html)]


def selected(html: str, name: str) -> str:
    block = re.search(rf'<select name="{name}">(.*?)</select>', html, re.S).group(1)
    found = re.findall(r'<option (?:value="([^"]*)" )?selected>([^<]*)</option>', block)
    assert len(found) <= 1, found
    return (found[0][0] or found[0][1]) if found else ""


def row_of(html: str, incident: int) -> str:
    part = html[html.index(f'data-incident="{incident}"'):]
    return part[:part.index("</tr>")]


@pytest.fixture
def world(demo, admin_hash, tmp_path):
    """The demo's integrations on a store of their own, with incidents opened and resolved by the dispatcher
    at known times: old (resolved 9 days ago), recent (resolved yesterday), two open ones (one acknowledged and
    snoozed), and one of an integration that has left the configuration."""
    env, _ = demo
    cfg = env.runtime.config
    store = small_store(tmp_path / "incidents.db", cfg, NOW - timedelta(days=11))
    dispatcher = make_dispatcher(cfg, store)

    def result(name: str, check: str, status: str, code: str | None, at: datetime) -> None:
        store.checks.record_result(integration=name, check=check,
                                   outcome=Outcome(Status(status), code, f"{check} {status}"),
                                   checked_at=at, thresholds=Thresholds(1, 1))
        dispatcher.run_once(at + timedelta(seconds=1))

    result("hoth-support", "token", "fail", "consent_missing", NOW - timedelta(days=10))
    result("hoth-support", "token", "ok", None, NOW - timedelta(days=9))
    result("sinch-queue", "graph_mail", "fail", "access_policy_denied", NOW - timedelta(days=2))
    result("sinch-queue", "graph_mail", "ok", None, NOW - timedelta(days=1))
    result("retired-box", "token", "fail", "consent_missing", NOW - timedelta(hours=5))
    result("agiloft-inbound", "ews", "fail", "auth_failed", NOW - timedelta(hours=3))
    result("enaio-notify", "token", "fail", "secret_expired", NOW - timedelta(hours=1))
    ids = {(i.affected or [m["integration"] for m in i.members])[0]: i.id for i in store.alerts.incidents(None)}
    store.alerts.ack_incident(ids["agiloft-inbound"], "alice", NOW - timedelta(hours=2))
    store.alerts.snooze_incident(ids["agiloft-inbound"], NOW + timedelta(hours=2))
    app = make_app(env, Access(mode="password", user="admin", password_hash=admin_hash))
    app.state.web.store = lambda: store
    try:
        yield app, store, ids
    finally:
        store.close()


@pytest.fixture
def app(world):
    """The world's app, for conftest.py's ``client`` (signed in as the admin)."""
    return world[0]


def test_lists_open_and_recently_resolved_incidents_with_members_and_times(world, client):
    _, store, ids = world
    page = client.get("/incidents")
    assert page.status_code == 200
    got = rows(page.text)
    # open ones first, then the resolved ones of the last 7 days, newest first; the one resolved 9 days ago is not
    assert got == [(ids["agiloft-inbound"], "open"), (ids["enaio-notify"], "open"),
                   (ids["retired-box"], "resolved"), (ids["sinch-queue"], "resolved")]
    assert ids["hoth-support"] not in [i for i, _ in got]

    acked = row_of(page.text, ids["agiloft-inbound"])
    assert "Mailbox login refused" in acked and "auth_failed" in acked and "agiloft-inbound / ews" in acked
    assert "alice" in acked  # acknowledged by
    snoozed = store.alerts.get_incident(ids["agiloft-inbound"]).snoozed_until
    assert f'datetime="{snoozed.astimezone(UTC).isoformat().replace("+00:00", "Z")}"' in acked  # snoozed until
    opened = store.alerts.get_incident(ids["enaio-notify"]).opened_at
    assert f'datetime="{opened.astimezone(UTC).isoformat().replace("+00:00", "Z")}"' in row_of(page.text,
                                                                                                ids["enaio-notify"])
    recent = row_of(page.text, ids["sinch-queue"])
    resolved = store.alerts.get_incident(ids["sinch-queue"]).resolved_at
    assert "recovered" in recent and resolved.strftime("%Y-%m-%d %H:%M:%S") in recent
    # a link to each integration still configured, none to one that left (its page would be a 404)
    assert 'href="/integrations/enaio-notify"' in row_of(page.text, ids["enaio-notify"])
    gone = row_of(page.text, ids["retired-box"])
    assert "retired-box" in gone and 'href="/integrations/retired-box"' not in gone and "no longer configured" in gone
    for link in set(re.findall(r'href="(/integrations/[^"]+)"', page.text)):
        assert client.get(link).status_code == 200, link


@pytest.mark.parametrize("query, expected", [
    ("status=open", ["agiloft-inbound", "enaio-notify"]),
    ("status=resolved", ["retired-box", "sinch-queue"]),
    ("status=all", ["agiloft-inbound", "enaio-notify", "retired-box", "sinch-queue"]),
    ("status=bogus", ["agiloft-inbound", "enaio-notify", "retired-box", "sinch-queue"]),
    ("integration=sinch-queue", ["sinch-queue"]),
    ("code=secret_expired", ["enaio-notify"]),
    ("tenant=contoso", ["agiloft-inbound", "enaio-notify", "sinch-queue"]),
    ("tenant=contoso&status=resolved&code=access_policy_denied", ["sinch-queue"]),
    ("tenant=nowhere", []),
    ("integration=hoth-support", []),  # resolved 9 days ago: out of the page's scope
])
def test_filters_by_status_tenant_integration_and_code_in_the_url(world, client, query, expected):
    _, _, ids = world
    html = client.get(f"/incidents?{query}").text
    assert [i for i, _ in rows(html)] == [ids[n] for n in expected]
    if not expected:
        assert "No incident matches these filters." in html
    # the form (a GET to /incidents) shows the filters the URL asked for, so the view can be refined and shared
    assert '<form class="filters" method="get" action="/incidents"' in html
    asked = dict(part.split("=") for part in query.split("&"))
    for key in ("status", "tenant", "integration", "code"):
        want = asked.get(key, "all" if key == "status" else "")
        assert selected(html, key) == ("all" if want == "bogus" else want), key


def test_same_access_rules_headers_and_csrf_as_every_page(world, client):
    app, store, ids = world
    with TestClient(app, base_url="http://127.0.0.1:8080") as anonymous:
        r = anonymous.get("/incidents?status=open", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    page = client.get("/incidents")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert client.post("/incidents", data={"csrf_token": csrf_of(page.text)}).status_code == 405  # read-only
    target = ids["enaio-notify"]
    assert f'action="/incidents/{target}/ack"' in row_of(page.text, target)
    assert client.post(f"/incidents/{target}/ack", data={}).status_code == 403  # no CSRF token, no action
    assert store.alerts.get_incident(target).ack_by is None
    done = client.post(f"/incidents/{target}/ack", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and store.alerts.get_incident(target).ack_by == "admin"


def test_every_page_links_to_incidents_in_its_navigation(client):
    for path in ("/", "/secrets", "/incidents", "/integrations/sinch-queue"):
        assert 'class="navlink" href="/incidents"' in client.get(path).text, path
