"""Who changed it (issue 16), end to end through the sandbox: an admin (or an app) changes an integration's app in the
directory, the integration's check fails, the sign-in poll reads the directory audit log, and the opening alert names
who made the change and when, in plain text and markdown; a change to another app is not named, and nothing is said
where no event explains the failure. The directory's text is outside text: inert in both bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from mailwarden.alerts import messages
from mailwarden.monitor.alerting import make_dispatcher
from tests.alerts.test_hostile_text import BASE, problems
from tests.monitor.signin_world import sb, world  # noqa: F401 - the module sandbox and its tenants

HOSTILE = "Ops [re-authorise](https://evil.example/x) <b>now</b>"


def _alerting(w, checks: dict) -> None:
    """The daemon checked as given, one route: the opening notice is queued with both bodies."""
    doc = yaml.safe_load(w.config_path.read_text())
    doc["integrations"][0]["checks"] = checks
    doc["alerts"] = {"routes": [{"name": "hook", "url": "json://127.0.0.1:9/"}]}
    doc["web"] = {"base_url": BASE}  # mailwarden's own links: the only ones a body may hold
    w.config_path.write_text(yaml.safe_dump(doc))
    w.open()


def _opening(w):
    [delivery] = make_dispatcher(w.rt.config, w.rt.store).evaluate()
    assert delivery.kind == "opened"
    msg = messages.Message(delivery.title, delivery.body_text, delivery.body_markdown, delivery.notify_type)
    assert not problems(msg), problems(msg)  # no foreign link or tag in any format a receiver reads
    return " ".join(delivery.body_text.split()), delivery.body_markdown


def _event_minute(w, app: str) -> str:
    [row] = w.rt.store.signins.directory_audits_of([w.tenant_id], w.apps[app])
    return row.activity_at.strftime("%Y-%m-%d %H:%M UTC")


def test_the_opening_alert_names_who_removed_admin_consent_and_when(world):  # noqa: F811 - the fixture imported above
    w = world(integrations=("daemon", "helpdesk"), actors=False)
    _alerting(w, {"token": {"require": ["graph:Mail.ReadWrite"]}})
    assert w.check("token", "daemon").status == "ok"
    other = w.ctl.add_app(w.tenant_id, display_name="payroll", application_permissions={"graph": ["Mail.ReadWrite"]})
    w.ctl.remove_app_permission(other["app_id"], "graph", "Mail.ReadWrite", actor="eve@contoso.com")
    w.ctl.remove_delegated_permission(w.apps["helpdesk"], "graph", "User.Read", actor="mallory@contoso.com")
    w.ctl.remove_app_permission(w.apps["daemon"], "graph", "Mail.ReadWrite", actor="admin@contoso.com")
    outcome = w.check("token", "daemon")
    assert (outcome.status, outcome.code) == ("fail", "consent_missing")
    w.poll()

    text, markdown = _opening(w)
    at = _event_minute(w, "daemon")
    said = (f"Directory audit: Admin consent to Mail.ReadWrite (application permission) removed by admin@contoso.com "
            f"at {at} (tenant t, \"Remove app role assignment from service principal\", app of daemon).")
    assert said in text, text
    assert "admin@contoso.com at " + at in markdown and "Remove app role assignment" in markdown
    # another app's change (an unmonitored one, or the helpdesk's, which is not failing) is not named
    assert "eve@" not in text + markdown and "mallory@" not in text + markdown
    # the incident's page puts the change on its timeline, before the failure it explains
    from mailwarden.monitor.web.incidents import incident_context

    [inc] = w.rt.store.alerts.incidents("open")
    ctx = incident_context(w.rt.config, w.rt.store, inc.id, datetime.now(UTC))
    whats = [e.what for e in ctx["events"]]
    change = "Admin consent to Mail.ReadWrite (application permission) removed by admin@contoso.com"
    assert change in whats and whats.index(change) < whats.index("daemon / token failing"), whats
    assert not any("eve@" in w_ or "mallory@" in w_ for w_ in whats)


def test_an_event_not_read_yet_is_not_guessed_and_the_reminder_names_it(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    _alerting(w, {"token": {"require": ["graph:Mail.ReadWrite"]}})
    w.ctl.remove_app_permission(w.apps["daemon"], "graph", "Mail.ReadWrite", actor="admin@contoso.com")
    assert w.check("token", "daemon").code == "consent_missing"
    text, markdown = _opening(w)  # the audit log not read yet: nothing said, no guess
    assert "Directory audit" not in text + markdown and "admin@contoso.com" not in text + markdown
    w.poll()
    later = datetime.now(UTC) + timedelta(hours=4, minutes=1)  # the reminder interval (4 h)
    [reminder] = make_dispatcher(w.rt.config, w.rt.store).evaluate(later)
    assert reminder.kind == "reminder"
    assert f"removed by admin@contoso.com at {_event_minute(w, 'daemon')}" in " ".join(reminder.body_text.split())


def test_an_app_that_removed_the_secret_is_named_by_its_name_and_app_id_inert(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    _alerting(w, {"token": {}})
    assert w.check("token", "daemon").status == "ok"
    robot = w.ctl.add_app(w.tenant_id, display_name=HOSTILE)
    [tenant] = [t for t in w.ctl.state()["tenants"] if t["id"] == w.tenant_id]
    [daemon] = [a for a in tenant["apps"] if a["app_id"] == w.apps["daemon"]]
    w.ctl.delete_secret(w.apps["daemon"], daemon["secrets"][0]["keyId"], actor=robot["app_id"])
    outcome = w.check("token", "daemon")
    assert outcome.status == "fail" and outcome.code in ("secret_invalid", "credential_not_found"), outcome
    w.poll()

    text, markdown = _opening(w)
    key_id = daemon["secrets"][0]["keyId"]
    assert f"Directory audit: Client secret {key_id} removed from the app registration by app Ops [re-authorise]" \
           f"(https[:]//evil.example/x) <b>now</b> ({robot['app_id']}) at " in text, text
    assert "Update application \u2013 Certificates and secrets management" in text
    # the app's display name is the directory's text: escaped markdown, defanged (_opening: no link, no tag)
    assert r"by app Ops \[re-authorise\](https\[:\]//evil" in markdown


def test_a_disabled_enterprise_application_names_who_disabled_it(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    _alerting(w, {"token": {}})
    assert w.check("token", "daemon").status == "ok"
    w.ctl.disable_app(w.apps["daemon"], actor="ops@contoso.com")
    assert w.check("token", "daemon").code == "app_disabled"
    w.poll()
    text, _markdown = _opening(w)
    assert f"Directory audit: Sign-in disabled on the enterprise application by ops@contoso.com at " \
           f"{_event_minute(w, 'daemon')} (tenant t, \"Update service principal\", app of daemon)." in text, text
