"""Real Apprise deliveries: json:// to a loopback receiver, mailto:// to an SMTP sink; retries and records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailwarden.alerts.records import Incident, Notification
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.db import open_store
from mailwarden.redact import register_secret
from tests.alerts.conftest import SECRET, load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def setup(tmp_path, **kw):
    cfg = load(write_config(tmp_path / "mailwarden.yaml", **kw))
    store = open_store(cfg.database_url())
    from mailwarden.monitor.runtime import integration_rows

    store.inventory.sync_integrations(integration_rows(cfg), T0)
    return cfg, store


def test_expired_secret_shared_by_three_is_one_alert_naming_all_three_with_cause_and_fix(tmp_path, receiver, sink):
    register_secret(SECRET)
    mailto = f"mailto://127.0.0.1:{sink.port}?mode=insecure&from=mailwarden@example.com&to=oncall@example.com"
    cfg, store = setup(tmp_path, names=("a", "b", "c"), routes=[{"name": "hook", "url": receiver.url},
                                                                {"name": "mail", "url": mailto}])
    d = make_dispatcher(cfg, store)
    for n in ("a", "b", "c"):
        record(store, n, "token", "ok", at=T0)
    assert d.run_once(T0).queued == 0  # new -> ok: silent
    for n in ("a", "b", "c"):
        # a summary that (wrongly) carries the secret: the store and the renderer both mask it
        record(store, n, "token", "fail", "secret_expired", at=T0 + timedelta(minutes=5),
               summary=f"AADSTS7000222 for secret {SECRET}")
        record(store, n, "secret_expiry", "fail", "secret_expired", at=T0 + timedelta(minutes=5))
    report = d.run_once(T0 + timedelta(minutes=5))
    assert report.sent == 2 and report.failed == 0
    assert store.count(Incident) == 1
    [body] = receiver.bodies
    text = body["title"] + "\n" + body["message"]
    for needle in ("Client secret expired", "a, b, c", "How to fix", "Certificates & secrets",
                   "http://mw.example:8080/integrations/a", "key: 1/opened/1", "shared by 3 integrations"):
        assert needle in text, needle
    assert SECRET not in text
    lines = body["message"].splitlines()  # each affected integration on a line of its own, not run together
    for n in ("a", "b", "c"):
        assert sum(line.startswith(f"- {n} / ") for line in lines) == 2, (n, body["message"])  # token, secret_expiry
    assert len(sink.messages) == 1
    mail = sink.text(0)
    assert "Client secret expired" in mail and "Certificates" in mail and "1/opened/1" in mail
    assert SECRET not in mail and SECRET not in sink.messages[0].decode(errors="replace")
    # nothing more while it stays broken; recovery of all three -> one resolved notice per route
    assert d.run_once(T0 + timedelta(minutes=30)).queued == 0
    for n in ("a", "b", "c"):
        record(store, n, "token", "ok", at=T0 + timedelta(minutes=40))
        record(store, n, "secret_expiry", "ok", at=T0 + timedelta(minutes=40))
    assert d.run_once(T0 + timedelta(minutes=40)).sent == 2
    assert "Resolved" in receiver.bodies[-1]["title"] + receiver.bodies[-1]["message"]
    assert len(receiver.bodies) == 2 and len(sink.messages) == 2
    rows = store.alerts.notifications()
    assert [(n.kind, n.route, n.ok) for n in rows] == [("opened", "hook", True), ("opened", "mail", True),
                                                       ("resolved", "hook", True), ("resolved", "mail", True)] \
        or sorted((n.kind, n.route, n.ok) for n in rows) == sorted(
            [("opened", "hook", True), ("opened", "mail", True), ("resolved", "hook", True),
             ("resolved", "mail", True)])
    assert all(SECRET not in (n.service + (n.error or "")) for n in rows)


def test_a_route_answering_500_twice_then_200_delivers_exactly_once(tmp_path, receiver):
    cfg, store = setup(tmp_path, routes=[{"name": "hook", "url": receiver.url}], retry_backoff="30s")
    d = make_dispatcher(cfg, store)
    receiver.codes = [500, 500]
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    r1 = d.run_once(T0)
    assert (r1.queued, r1.sent, r1.failed) == (1, 0, 1)
    assert d.run_once(T0 + timedelta(seconds=10)).failed == 0  # backoff: not due yet
    assert d.run_once(T0 + timedelta(seconds=30)).failed == 1  # 2nd attempt, 500 again
    assert d.run_once(T0 + timedelta(seconds=60)).sent == 0  # next after 30 + 60 s
    assert d.run_once(T0 + timedelta(seconds=90)).sent == 1
    assert d.run_once(T0 + timedelta(hours=1)).sent == 0
    assert len(receiver.bodies) == 1
    rows = store.alerts.notifications()
    assert [(n.ok, n.permanent) for n in rows] == [(False, False), (False, False), (True, False)]
    assert "500" in rows[0].error
    assert all(n.key == "1/opened/1" for n in rows)


def test_invalid_url_is_permanent_and_does_not_hold_back_other_routes(tmp_path, receiver):
    cfg, store = setup(tmp_path, routes=[{"name": "broken", "url": "nosuchscheme://x"},
                                         {"name": "down", "url": "json://127.0.0.1:9/x"},
                                         {"name": "hook", "url": receiver.url}], max_attempts=2)
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    d.run_once(T0)
    d.run_once(T0 + timedelta(minutes=5))
    assert len(receiver.bodies) == 1
    by_route = {}
    for n in store.alerts.notifications():
        by_route.setdefault(n.route, []).append((n.ok, n.permanent))
    assert by_route == {"broken": [(False, True)], "down": [(False, False), (False, True)], "hook": [(True, False)]}
    assert "retries exhausted" in store.alerts.notifications()[-1].error or any(
        "retries exhausted" in (n.error or "") for n in store.alerts.notifications())
    assert {d.state for d in store.alerts.deliveries()} == {"failed", "sent"}


def test_routing_by_tags_severity_check_kind_owner_and_default(tmp_path, receiver):
    hook = receiver.url
    cfg, store = setup(tmp_path, names=("a", "b"), shared=False, routes=[
        {"name": "helpdesk", "url": hook + "?x=1", "tags": ["helpdesk"], "severity": ["critical"]},
        {"name": "tokens-only", "url": hook + "?x=2", "checks": ["secret_expiry"]},
        {"name": "fallback", "url": hook + "?x=3", "default": True},
    ], owner_route=hook + "?owner={owner}")
    d = make_dispatcher(cfg, store)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    d.run_once(T0)
    routes = sorted({n.route for n in store.alerts.notifications()})
    assert routes == ["helpdesk", "owner:owner-a@contoso.com"]
    # a warning-severity diagnosis on a token check: no filtered route takes it, so the default does
    record(store, "b", "token", "fail", "throttled", at=T0)
    d.run_once(T0 + timedelta(minutes=1))
    later = sorted({n.route for n in store.alerts.notifications() if n.incident_id == 2})
    assert later == ["fallback", "owner:owner-b@contoso.com"]


def test_alerts_test_reports_per_service_and_heartbeat_is_pinged(tmp_path, receiver):
    cfg, store = setup(tmp_path, routes=[{"name": "hook", "urls": [receiver.url, "json://127.0.0.1:9/x"],
                                          "tags": ["ops"]}], heartbeat_url=f"http://127.0.0.1:{receiver.port}/hb")
    d = make_dispatcher(cfg, store)
    results = d.test(["hook"])
    assert [o.ok for _, o in results] == [True, False]
    assert store.count(Notification, kind="test") == 2
    assert "test notification" in receiver.bodies[0]["message"]
    n = len(receiver.bodies)
    assert receiver.pings == []  # the test command pings nothing
    d.run_once(T0)
    d.run_once(T0 + timedelta(minutes=1))
    assert len(receiver.bodies) == n and receiver.pings == ["/hb", "/hb"]  # one ping per dispatch cycle


def test_a_route_from_an_apprise_config_file_delivers_and_a_broken_one_holds_back_no_other(tmp_path, receiver):
    (tmp_path / "apprise.txt").write_text(f"{receiver.url}?from=file\n")
    (tmp_path / "broken.yml").write_text("urls: [this is not: an apprise config\n")
    cfg, store = setup(tmp_path, routes=[{"name": "file", "config": "apprise.txt"},
                                         {"name": "bad", "config": "broken.yml"},
                                         {"name": "hook", "url": receiver.url}])
    d = make_dispatcher(cfg, store)
    assert [o.ok for _, o in d.test(["file"])] == [True]
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    d.run_once(T0)
    by_route = {n.route: n.ok for n in store.alerts.notifications() if n.kind == "opened"}
    assert by_route["file"] is True and by_route["hook"] is True
    assert len(receiver.bodies) == 3  # the test notification, then the alert through each working route
    assert not by_route.get("bad")  # its own failure, recorded or skipped, never the others'
