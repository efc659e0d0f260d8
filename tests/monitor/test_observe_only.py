"""Observe-only integrations (issue 16): admins who will not hand a monitor every secret configure the app with
`observe_only: true` and no credential. mailwarden then watches it from outside only, through the tenant's monitor
app: the app's secret_expiry (which credential is in use: the key the consuming system's app-only sign-ins name, or
the only valid one, else unknown and said so), the consuming system's sign-ins (`consumer`), and expiry reminders.
It never signs in as the app, and nothing it says asks the admin to update a copy it does not have."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import yaml

from mailwarden.alerts import expiry
from mailwarden.checks import diagnoses
from mailwarden.checks.facts import facts
from mailwarden.monitor.secrets import SecretsCycle, api_secrets
from tests.monitor.signin_world import sb, world  # noqa: F401 - the module sandbox and its tenants
from tests.monitor.test_config import BASE, problems

# -- configuration -------------------------------------------------------------------------------------------------
OBSERVED = BASE.replace("secret: env:HD_SECRET", "observe_only: true")


def test_an_observe_only_integration_runs_secret_expiry_and_consumer_by_default(tmp_path):
    from mailwarden.monitor import config as config_mod
    from tests.monitor.test_config import write

    cfg = config_mod.load(write(tmp_path, OBSERVED))
    assert list(cfg.integration("helpdesk-support").checks) == ["secret_expiry", "consumer"]
    assert cfg.apps["helpdesk"].observe_only and cfg.apps["helpdesk"].secret is None


def _path(where: tuple) -> str:
    """A problem's location as `validate` writes it: integrations[0].checks.graph_mail"""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@pytest.mark.parametrize(("text", "where", "said"), [
    # a check that signs in as the app: named, with the checks that can run
    (OBSERVED + "    checks: [token, imap, consumer]\n", ("integrations", 0, "checks", 0),
     "check 'token' signs in as the app, and app 'helpdesk' is observe_only"),
    (OBSERVED + "    checks: {consumer: {}, graph_mail: {}}\n", ("integrations", 0, "checks", "graph_mail"),
     "observe-only checks: secret_expiry, consumer"),
    # a copy and observe_only at once
    (BASE.replace("secret: env:HD_SECRET", "secret: env:HD_SECRET, observe_only: true"), ("apps", "helpdesk"),
     "observe_only: true means mailwarden holds no credential of the app"),
    # neither: the error names the way to say it on purpose
    (BASE.replace(", secret: env:HD_SECRET", ""), ("apps", "helpdesk"), "or observe_only: true"),
    # watched through the monitor app: a tenant without one cannot
    (OBSERVED.replace(", monitor_app: mon", ""), ("apps", "helpdesk", "observe_only"),
     "tenant 'contoso' names none"),
    # the monitor app itself signs in
    (BASE.replace("secret: env:MON_SECRET", "observe_only: true"), ("tenants", "contoso", "monitor_app"),
     "app 'mon' is observe_only"),
    # automated rotation writes into mailwarden's copy
    (OBSERVED.replace("observe_only: true", "observe_only: true, rotation: {automated: true}"), ("apps", "helpdesk"),
     "rotation.automated"),
])
def test_observe_only_mistakes_are_named_where_they_are(tmp_path, text, where, said):
    found, message = problems(tmp_path, text)
    assert said in message, message
    assert any(p.startswith(_path(where)) and said in p for p in found), found


# -- against the sandbox ---------------------------------------------------------------------------------------------
def _observe_only(w) -> None:
    """The daemon app loses its copy: observe_only, no secret (its file deleted), the default checks."""
    doc = yaml.safe_load(w.config_path.read_text())
    doc["apps"]["daemon"] = {k: v for k, v in doc["apps"]["daemon"].items() if k != "secret"} | {"observe_only": True}
    for integ in doc["integrations"]:
        integ.pop("checks", None)
    w.config_path.write_text(yaml.safe_dump(doc))
    (w.dir / "secrets" / "daemon").unlink()  # mailwarden never reads it
    w.open()


def _keys(w) -> list[dict]:
    [tenant] = [t for t in w.sb.control.state()["tenants"] if t["id"] == w.tenant_id]
    [app] = [a for a in tenant["apps"] if a["app_id"] == w.apps["daemon"]]
    return app["secrets"]


def test_secret_expiry_judges_the_key_the_consuming_system_signs_in_with(world):  # noqa: F811 - the fixture imported above
    w = world(integrations=("daemon",), actors=False)
    _observe_only(w)
    [long_lived] = _keys(w)

    one = w.check("secret_expiry", "daemon")
    assert one.status.value == "ok", one.summary
    assert "the app's only valid secret or certificate, so the one Sinch uses if it signs in with one" in one.summary

    soon = w.ctl.add_secret(w.apps["daemon"], display_name="temp", end="+5d")  # a second one, ending soon
    w.rt.credentials._cache.clear()
    unknown = w.check("secret_expiry", "daemon")
    assert (unknown.status.value, unknown.code) == ("warn", "secret_expiring"), unknown.summary
    assert "temp" in unknown.summary and "which one Sinch uses is unknown" in unknown.summary
    assert unknown.metrics["in_use"] == "unknown"

    # the sign-in log names the key Sinch uses: the long-lived one, so the soon-ending one is nobody's problem
    w.ctl.record_signin(w.tenant_id, w.apps["daemon"], event_type="servicePrincipal", key_id=long_lived["keyId"])
    w.poll()
    w.rt.credentials._cache.clear()
    known = w.check("secret_expiry", "daemon")
    assert known.status.value == "ok", known.summary
    assert "the one Sinch last signed in with" in known.summary and "(sign-in log)" in known.summary
    assert known.metrics["in_use"] == "signin_log" and known.metrics["key_id"] == long_lived["keyId"]

    # and when Sinch signs in with the soon-ending one, that is the one judged
    w.ctl.record_signin(w.tenant_id, w.apps["daemon"], event_type="servicePrincipal", key_id=soon["keyId"])
    w.poll()
    w.rt.credentials._cache.clear()
    on_temp = w.check("secret_expiry", "daemon")
    assert (on_temp.status.value, on_temp.code, on_temp.metrics["key_id"]) == ("warn", "secret_expiring",
                                                                                soon["keyId"]), on_temp.summary


def test_an_app_without_any_secret_is_no_expiry_alarm_and_its_consumer_is_still_watched(world):  # noqa: F811
    """No secret and no certificate is no failure in itself: a public client or a federated credential needs none.
    Whether the consuming system signs in at all is the consumer check's to say."""
    w = world(integrations=("daemon",), actors=False)
    _observe_only(w)
    [only] = _keys(w)
    w.ctl.delete_secret(w.apps["daemon"], only["keyId"])
    w.rt.credentials._cache.clear()
    out = w.check("secret_expiry", "daemon")
    assert (out.status.value, out.code) == ("ok", None), out.summary
    assert "nothing of it expires" in out.summary and "the consumer check says which" in out.summary
    consumer = w.check("consumer", "daemon")  # read through the monitor app: it runs without any copy
    assert consumer.code != "config_error", consumer.summary


def test_reminders_and_fix_steps_never_ask_to_update_a_copy_mailwarden_does_not_hold(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    _observe_only(w)
    [old] = _keys(w)
    w.ctl.delete_secret(w.apps["daemon"], old["keyId"])
    ending = w.ctl.add_secret(w.apps["daemon"], display_name="ending", end="+3d")  # the only one: in use
    w.rt.credentials._cache.clear()
    report = asyncio.run(SecretsCycle.of(w.rt).run())
    assert not report.errors, report.errors
    assert report.reminders and ending["keyId"] in report.reminders[0]
    [row] = [c for c in api_secrets(w.rt.config, w.rt.store)["credentials"] if c["key_id"] == ending["keyId"]]
    assert row["usage"]["known"] == "mailwarden holds no copy of this app's credentials (observe_only)", row
    [sent] = w.rt.store.rotation.reminders(w.apps["daemon"])
    assert sent.key_id == ending["keyId"]
    cred = expiry.CredentialFacts("daemon", w.apps["daemon"], "client_secret", ending["keyId"], "ending",
                                  ending["hint"], sent.expires_at)
    msg = expiry.render_reminder(w.rt.config, cred, [w.rt.config.integration("daemon")], sent.stage,
                                 datetime.now(UTC), "k")
    assert "mailwarden's own copy" not in msg.text and "--check consumer" in msg.text, msg.text

    integ = w.rt.config.integration("daemon")
    out = w.check("secret_expiry", "daemon")
    steps = " ".join(diagnoses.render_fix(out.code, **facts(w.rt.config, integ, out, "secret_expiry")))
    assert "New client secret" in steps and "secret reference" not in steps
    with_copy = diagnoses.render_fix(out.code, **{**facts(w.rt.config, integ, out, "secret_expiry"), "copy": "held"})
    assert any("secret reference" in s for s in with_copy)  # the step is there for apps whose copy it holds
