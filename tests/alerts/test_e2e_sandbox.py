"""End to end with the sandbox: break an integration through the control API, get exactly one alert per route
with cause and fix, a reminder only after the interval, then one recovery notice once it is repaired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import apprise

from mailwarden.monitor.alerting import make_dispatcher

CAPTURED: list[dict] = []


@apprise.decorators.notify(on="mwcapture", name="test capture")
def _capture(body, title, notify_type, *args, **kwargs):
    CAPTURED.append({"title": title, "body": body})
    return True


def test_break_and_repair_through_the_sandbox(world, receiver):
    CAPTURED.clear()
    w = world("app")
    w.rewrite(lambda doc: doc.update(alerts={"routes": [{"name": "hook", "url": receiver.url},
                                                         {"name": "capture", "url": "mwcapture://"}]}))
    rt = w.runtime
    d = make_dispatcher(rt.config, rt.store)
    assert w.run("token").status == "ok"
    assert d.run_once().queued == 0
    w.ctl.expire_secret(w.app_id, w.key_id)
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == ("fail", "secret_expired")
    report = d.run_once()
    assert report.sent == 2 and report.failed == 0
    assert len(receiver.bodies) == 1 and len(CAPTURED) == 1
    for text in (receiver.bodies[0]["title"] + receiver.bodies[0]["message"],
                 CAPTURED[0]["title"] + CAPTURED[0]["body"]):
        assert "Client secret expired" in text and "AADSTS7000222" in text  # cause
        assert "New client secret" in text and "subject" in text  # fix, integration
        assert w.secret not in text
    # still failing: nothing new; a reminder only once the interval has passed
    assert w.run("token").status == "fail"
    now = datetime.now(UTC)
    assert d.run_once(now + timedelta(hours=3, minutes=59)).queued == 0
    assert d.run_once(now + timedelta(hours=4, minutes=1)).sent == 2
    assert "STILL FAILING" in CAPTURED[-1]["title"]
    # repaired: one recovery notice per route
    w.ctl.set_secret_end(w.app_id, w.key_id, "+200d")
    assert w.run("token").status == "ok"
    assert d.run_once(now + timedelta(hours=5)).sent == 2
    assert [c["title"].split(":")[0] for c in CAPTURED] == ["[mailwarden] FAILING", "[mailwarden] STILL FAILING",
                                                             "[mailwarden] RESOLVED"]
    assert len(receiver.bodies) == 3


def test_one_revoked_account_one_incident_one_reauthorisation_fixes_all(world, receiver):
    """Issue 14: the two integrations of one delegated account (two shared mailboxes) share its refresh token: a
    revocation is one incident naming both, and one sign-in (through either) makes both work again."""
    CAPTURED.clear()
    w = world("delegated", checks={"token": {}, "pop": {}},
              exchange=lambda ids: {"mailboxes": [
                  {"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["upn"]]},
                  {"address": f"box2@{ids['domain']}", "type": "shared", "full_access": [ids["upn"]]}]})

    def second(doc):
        base = doc["integrations"][0]
        doc["integrations"].append({**base, "name": "subject2", "mailbox": base["mailbox"].replace("box@", "box2@")})
        doc["alerts"] = {"routes": [{"name": "capture", "url": "mwcapture://"}]}
    w.rewrite(second)
    w.sign_in()  # through "subject" only
    assert w.run("token", "subject2").status == "ok", "the account's token serves both integrations"
    assert w.run("pop", "subject2").status == "ok"
    w.ctl.revoke_user_sessions(w.upn)
    assert [w.run("token", n).code for n in ("subject", "subject2")] == ["refresh_token_revoked"] * 2
    rt = w.runtime
    d = make_dispatcher(rt.config, rt.store)
    assert d.run_once().sent == 1
    assert "subject" in CAPTURED[0]["body"] and "subject2" in CAPTURED[0]["body"]
    assert "One reauthorisation fixes all of them" in CAPTURED[0]["body"]
    [inc] = rt.store.alerts.incidents("open")
    assert inc.affected == ["subject", "subject2"]
    w.sign_in()  # one reauthorisation
    assert [w.run("token", n).status for n in ("subject", "subject2")] == ["ok", "ok"]
    assert d.run_once().sent == 1 and "RESOLVED" in CAPTURED[-1]["title"]
