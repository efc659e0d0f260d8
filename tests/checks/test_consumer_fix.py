"""The fix of `consumer_signin_failed` acts where the consuming system itself signs in or keeps its secret (its own
screens, from its guide in /work/shared/seeds), chosen by the AADSTS code the system got; never mailwarden's own
reauthorisation, since mailwarden's token may be fine. Rendered as users read it: the dashboard's and `check --format
json`'s fix (monitor.output.result_json), and the alert (alerts.messages, as the dispatcher renders it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mailwarden.alerts import messages
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.checks import diagnoses
from mailwarden.checks.base import SignIn, SignInWindow
from mailwarden.checks.consumer import ConsumerOptions, is_fatal, judge
from mailwarden.monitor.config import Config
from mailwarden.monitor.output import result_json

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
ACCOUNT, MAILBOX = "svc-mail@contoso.com", "support@contoso.com"
REAUTH_URL = "https://mailwarden.contoso.com/reauth/SIGNEDTOKEN"

# Where each seeded system's admin acts, from its guide: (flow, its AADSTS code, the words of its own screen)
SEEDED = {
    "House-on-the-Hill helpdesk": ("delegated", 50173, "OAuth Scripts > the oauth: script > Auth, sign in as "
                                   + ACCOUNT),
    "Oracle B2C Service": ("delegated", 50173, "open the mailbox in the mailbox editor > Authenticate and sign in as "
                           + ACCOUNT),
    "Sinch Contact Center": ("app", 7000222, "System Configurator > the MS365 mail server's OAuth settings > client "
                             "secret"),
    "Agiloft": ("app", 7000222, "Setup > Email and SMS > Configure Inbound Email > the account > Account tab > Client "
                "Secret"),
    "enaio": ("app", 7000222, "OfficeClientSecret (enterprise-manager) and featureSwitches.sendEmail."
              "oAuthClientSecret (osweb-prod.yml)"),
}
SYSTEMS = [*SEEDED, "Acme Ticketing"]
FATAL = sorted(c for c in diagnoses.AADSTS_CODES if is_fatal(c))
# what mailwarden's own reauthorisation looks like in a text: never in the consumer's fix
MAILWARDEN_REAUTH = re.compile(r"mailwarden reauth|Re-authorise mailwarden|/reauth/|reauthorisation link", re.I)


def config(system: str, flow: str) -> Config:
    integ = {"name": "subject", "app": "app", "flow": flow, "system": system, "mailbox": MAILBOX,
             "checks": {"token": {}, "consumer": {}, "pop" if flow == "delegated" else "graph_mail": {}}}
    if flow == "delegated":
        integ["account"] = ACCOUNT
    return Config.model_validate({
        "database": "sqlite:///:memory:", "web": {"base_url": "https://mailwarden.contoso.com"},
        "tenants": {"contoso": {"tenant_id": TENANT_ID, "monitor_app": "mailwarden"}},
        "apps": {"app": {"tenant": "contoso", "client_id": CLIENT_ID, "secret": "env:APP_SECRET",
                         "display_name": "Mail connector"},
                 "mailwarden": {"tenant": "contoso", "client_id": "12121212-3434-5656-7878-909090909090",
                                "secret": "env:MONITOR_SECRET"}},
        "integrations": [integ]})


def failing(system: str, flow: str, code: int):
    """The consumer check's outcome for a system that got ``code`` three times since its last success."""
    rows = [(90, 0), (30, code), (20, code), (10, code)]
    signins = tuple(SignIn(f"s{i}", NOW - timedelta(minutes=m), "servicePrincipal" if flow == "app" else
                           "nonInteractiveUser", c, None, None, ACCOUNT if flow == "delegated" else None)
                    for i, (m, c) in enumerate(rows))
    out = judge(SignInWindow("ok", None, NOW - timedelta(days=1), NOW, signins), ConsumerOptions(), NOW,
                system=system, flow=flow, account=ACCOUNT if flow == "delegated" else None)
    assert out.code == "consumer_signin_failed" and out.status.value == "fail", out.summary
    return out


def rendered(system: str, flow: str, code: int) -> SimpleNamespace:
    cfg = config(system, flow)
    out = failing(system, flow, code)
    row = SimpleNamespace(id=1, integration="subject", check="consumer", status=out.status.value, code=out.code,
                          summary=out.summary, latency_ms=3.0, details=out.metrics, checked_at=NOW)
    dashboard = result_json(cfg, row)
    inc = Incident(id=7, key="int:subject:consumer_signin_failed", kind="single", code=out.code, members=[
        {"integration": "subject", "check": "consumer", "status": "fail", "code": out.code,
         "since": NOW.isoformat()}], affected=["subject"], opened_at=NOW, status="open")
    ctx = messages.Context(cfg, {("subject", "consumer"): messages.CheckFacts(out.summary, None, out.metrics)},
                           {"subject": REAUTH_URL})
    alert = messages.render(Notice("opened", inc, 1), ctx)
    return SimpleNamespace(summary=out.summary, fix=dashboard["fix"], alert=alert)


@pytest.mark.parametrize("system", list(SEEDED))
def test_the_fix_names_where_in_that_system_to_act(system):
    flow, code, where = SEEDED[system]
    case = rendered(system, flow, code)
    assert any(where in step for step in case.fix), (where, case.fix)
    assert where in case.alert.text, case.alert.text
    assert f"{system} itself fails to sign in: AADSTS{code}, 3 times since 11:30 UTC" in case.summary


def test_oracle_after_a_new_secret_authenticates_each_mailbox_again():
    case = rendered("Oracle B2C Service", "delegated", 7000222)
    text = " ".join(case.fix)
    assert "CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET" in text
    assert "after a new client secret, authenticate each mailbox again" in text


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("flow", ["app", "delegated"])
def test_never_mailwardens_reauthorisation(system, flow):
    """For every catalogued code the consuming system can get, in every system and flow: the fix acts in that system
    or in Entra ID, never through mailwarden's own reauthorisation (the alert offers no reauthorisation link)."""
    for code in FATAL:
        case = rendered(system, flow, code)
        for where, text in [*(("fix", s) for s in case.fix), ("alert", case.alert.text),
                            ("alert markdown", case.alert.markdown)]:
            assert not MAILWARDEN_REAUTH.search(text), (code, where, text[:300])
        assert f"AADSTS{code}" in case.alert.text


@pytest.mark.parametrize(("code", "words"), [
    (50173, "revoked its sessions"),
    (70008, "did not save the new refresh token"),
    (7000215, "often the Secret ID pasted instead of the Value"),
    (65001, "Grant admin consent"),
    (50105, "Users and groups > Add user/group"),
    (53003, "Conditional Access tab names the policy"),
    (7000112, "'Enabled for users to sign-in?' to Yes"),
    (50057, "tick 'Account enabled'"),
])
def test_the_cause_and_fix_follow_the_consumers_own_code(code, words):
    case = rendered("Oracle B2C Service", "delegated", code)
    cause = diagnoses.get(diagnoses.classify_aadsts([code])).title
    assert f"with AADSTS{code} ({cause})" in case.alert.text
    assert any(words in step for step in case.fix), (words, case.fix)


def test_a_code_outside_the_catalog_sends_to_the_sign_in_log():
    steps = diagnoses.render_fix("consumer_signin_failed", system="Agiloft", flow="app", client_id=CLIENT_ID,
                                 detail="Agiloft itself fails to sign in: AADSTS99999, once since 11:40 UTC")
    text = " ".join(steps)
    assert "Service principal sign-ins, filter on " + CLIENT_ID in text and "AADSTS99999" in text
    assert "Configure Inbound Email" in text


@pytest.mark.parametrize(("state", "words"), [
    ("unlicensed", "Microsoft Entra ID P1 or P2"),
    ("forbidden", "AuditLog.Read.All and Directory.Read.All > Add permissions, then Grant admin consent"),
    ("pending", "its first poll fills this in"),
    ("error", "it reads again at its next poll"),
    ("unsupported", "not offered in this tenant's cloud"),
])
def test_consumer_unknown_steps_follow_why(state, words):
    summary = f"Agiloft's own sign-ins are unknown ({state}): the note"
    steps = diagnoses.render_fix("consumer_unknown", system="Agiloft", detail=summary, monitor_app="mailwarden")
    assert any(words in s for s in steps), steps
    assert not any(MAILWARDEN_REAUTH.search(s) for s in steps)
