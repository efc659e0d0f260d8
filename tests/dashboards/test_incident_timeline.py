"""`/incidents/{id}` (issue 19, item 3): one incident with its members and a timeline of what is stored, oldest
first: the failing checks, the opening, the notice, every send attempt (sent, or failed with its masked error), the
last acknowledgement, the end of the last snooze, the resolution; acknowledge and snooze from the page (CSRF as
everywhere), which then comes back to the same page.

The incidents are opened by the dispatcher (the demo's console route) at known times on a store of their own, so
every time on the page is known here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.web import views
from mailwarden.monitor.web.auth import Access
from mailwarden.state import Thresholds
from tests.dashboards.conftest import csrf_of, make_app, small_store

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=10)  # enaio-notify's token check fails
MASKED = "json://hooks.example.com/****"
ERROR = f"HTTP 503 from {MASKED}: Service Unavailable"


@pytest.fixture
def world(demo, admin_hash, tmp_path):
    """An open incident (enaio-notify, secret expired at T0) with its opening notice, two reminders (4 h apart,
    the default reminder interval) sent on the console route, one more attempt of the second reminder that failed
    on a webhook route, acknowledged by alice at T0 + 9 h; a resolved one (sinch-queue, recovered); and an open one
    nobody acknowledged (agiloft-inbound)."""
    env, _ = demo
    cfg = env.runtime.config
    store = small_store(tmp_path / "timeline.db", cfg, NOW - timedelta(days=2))
    dispatcher = make_dispatcher(cfg, store)

    def result(name: str, check: str, status: str, code: str | None, at: datetime) -> None:
        store.checks.record_result(integration=name, check=check,
                                   outcome=Outcome(Status(status), code, f"{check} {status}"),
                                   checked_at=at, thresholds=Thresholds(1, 1))
        dispatcher.run_once(at + timedelta(seconds=1))

    result("enaio-notify", "token", "fail", "secret_expired", T0)
    dispatcher.run_once(T0 + timedelta(hours=4, seconds=2))
    dispatcher.run_once(T0 + timedelta(hours=8, seconds=3))
    result("sinch-queue", "graph_mail", "fail", "access_policy_denied", NOW - timedelta(hours=3))
    result("sinch-queue", "graph_mail", "ok", None, NOW - timedelta(hours=2))
    result("agiloft-inbound", "ews", "fail", "auth_failed", NOW - timedelta(hours=1))
    ids = {(i.affected or [m["integration"] for m in i.members])[0]: i.id for i in store.alerts.incidents(None)}
    open_id = ids["enaio-notify"]
    last = [n for n in store.alerts.notifications(open_id) if n.kind == "reminder"][-1]
    store.alerts.add_notification(incident_id=open_id, key=last.key, kind="reminder", route="ops-webhook",
                                  service=MASKED, ok=False, error=ERROR, permanent=False,
                                  at=T0 + timedelta(hours=8, seconds=5))
    store.alerts.ack_incident(open_id, "alice", T0 + timedelta(hours=9))
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


def events(html: str) -> list[tuple[str, str]]:
    """(datetime attribute, text) of each timeline entry, in the page's order."""
    block = html[html.index('<ol class="events">'):html.index("</ol>", html.index('<ol class="events">'))]
    out = []
    for item in re.findall(r'<li class="event[^"]*">(.*?)</li>', block, re.S):
        at = re.search(r'<time datetime="([^"]+)"', item).group(1)
        what = item[item.index("<div>"):]
        out.append((at, " ".join(re.sub(r"<[^>]+>", " ", what).split())))
    return out


def test_the_timeline_shows_what_happened_in_order_with_its_times(world, client):
    _, store, ids = world
    inc = store.alerts.get_incident(ids["enaio-notify"])
    page = client.get(f"/incidents/{inc.id}")
    assert page.status_code == 200
    got = events(page.text)
    assert [at for at, _ in got] == sorted(at for at, _ in got)  # oldest first
    texts = [t for _, t in got]

    def at(fragment: str) -> str:
        found = [a for a, t in got if fragment in t]
        assert found, (fragment, texts)
        return found[0]

    iso = views.iso
    assert at("enaio-notify / token failing") == iso(T0)
    assert at("opened") == iso(T0)
    notes = store.alerts.notifications(inc.id)
    reminders = [n for n in notes if n.kind == "reminder" and n.ok]
    assert len(reminders) == 2 and inc.reminders == 2
    first, second = (n.key.rsplit("/", 1)[1] for n in reminders)
    assert at(f"reminder #{first} sent") == iso(T0 + timedelta(hours=4, seconds=2))
    assert at(f"reminder #{second} sent") == iso(T0 + timedelta(hours=8, seconds=3))
    assert at("opening notice sent") == iso(T0 + timedelta(seconds=1))
    # the failed attempt: its route, the masked service and the error as stored; nothing unmasked
    failed = next(t for _, t in got if "failed" in t)
    assert f"reminder #{second} failed (retried)" in failed and "route ops-webhook" in failed and ERROR in failed
    assert at(f"reminder #{second} failed") == iso(T0 + timedelta(hours=8, seconds=5))
    assert "route console" in next(t for _, t in got if f"reminder #{first} sent" in t)
    # only the latest acknowledgement is stored, and the page says so
    assert at("last acknowledged by alice") == iso(T0 + timedelta(hours=9))
    assert "only the latest acknowledgement is stored" in texts[-1]
    order = [next(i for i, t in enumerate(texts) if fragment in t) for fragment in (
        "opened", "opening notice sent", f"reminder #{first} sent", f"reminder #{second} sent",
        f"reminder #{second} failed", "last acknowledged by alice")]
    assert order == sorted(order)
    # the times as people read them, in UTC
    assert f"{(T0 + timedelta(hours=9)).strftime('%Y-%m-%d %H:%M')} UTC" in page.text
    # members, and a link to the integration
    assert 'href="/integrations/enaio-notify"' in page.text and "Client secret expired" in page.text


def test_a_snooze_and_a_resolution_are_on_the_timeline(world, client):
    app, store, ids = world
    page = client.get(f"/incidents/{ids['enaio-notify']}")
    done = client.post(f"/incidents/{ids['enaio-notify']}/snooze",
                       data={"csrf_token": csrf_of(page.text), "for": "4h"}, follow_redirects=False)
    assert done.status_code == 303
    until = store.alerts.get_incident(ids["enaio-notify"]).snoozed_until
    got = events(client.get(f"/incidents/{ids['enaio-notify']}").text)
    assert got[-1][0] == views.iso(until) and got[-1][1].startswith("snooze ends")
    assert "when it was set, and by whom, is not stored" in got[-1][1]

    resolved = store.alerts.get_incident(ids["sinch-queue"])
    got = events(client.get(f"/incidents/{resolved.id}").text)
    texts = [t for _, t in got]
    assert (views.iso(resolved.resolved_at), "resolved recovered") in got
    # its notices: the opening one, then the resolved one, after the resolution
    def first(prefix: str) -> int:
        return next(i for i, t in enumerate(texts) if t.startswith(prefix))

    assert first("opening notice sent") < texts.index("resolved recovered") < first("resolved notice sent")


def test_acknowledge_and_snooze_from_the_incident_page_need_csrf_and_come_back_to_it(world, client):
    _, store, ids = world
    target = ids["agiloft-inbound"]  # open, not acknowledged
    page = client.get(f"/incidents/{target}")
    assert f'action="/incidents/{target}/ack"' in page.text and f'action="/incidents/{target}/snooze"' in page.text
    assert f'name="back" value="/incidents/{target}"' in page.text
    # without the CSRF token: refused, nothing changes
    assert client.post(f"/incidents/{target}/ack", data={"back": f"/incidents/{target}"}).status_code == 403
    assert client.post(f"/incidents/{target}/snooze", data={"for": "1h"}).status_code == 403
    inc = store.alerts.get_incident(target)
    assert inc.ack_by is None and inc.snoozed_until is None
    # with it: done, and back on the incident's page, which says so
    done = client.post(f"/incidents/{target}/ack", data={"csrf_token": csrf_of(page.text),
                                                         "back": f"/incidents/{target}"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/incidents/{target}"
    assert store.alerts.get_incident(target).ack_by == "admin"
    after = client.get(done.headers["location"]).text
    assert f"incident #{target} acknowledged by admin" in after
    assert "Last acknowledged by <strong>admin</strong>" in after
    done = client.post(f"/incidents/{target}/snooze", data={"csrf_token": csrf_of(after), "for": "1h",
                                                            "back": f"/incidents/{target}"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/incidents/{target}"
    assert store.alerts.get_incident(target).snoozed_until is not None
    # a "back" that is not one of the app's incident pages is not followed
    done = client.post(f"/incidents/{target}/snooze", data={"csrf_token": csrf_of(after), "for": "1h",
                                                            "back": "//evil.example.com/incidents/1"},
                       follow_redirects=False)
    assert done.headers["location"] == "/"


def test_each_row_of_the_incidents_page_links_to_its_incident(world, client):
    _, _, ids = world
    html = client.get("/incidents").text
    for name in ("enaio-notify", "sinch-queue"):
        assert f'href="/incidents/{ids[name]}"' in html
        assert client.get(f"/incidents/{ids[name]}").status_code == 200
        assert 'name="back" value="/incidents"' in html or name == "sinch-queue"
    assert client.get(f"/incidents/{max(ids.values()) + 100}").status_code == 404
    assert client.get("/incidents/1234567890123456789012").status_code == 404  # past an id's 18 digits
    # resolved: no actions
    assert "/ack" not in client.get(f"/incidents/{ids['sinch-queue']}").text
