import dataclasses
import re

import pytest

from mailwarden.checks import diagnoses
from mailwarden.checks.diagnoses import AADSTS_CODES, CATALOG, Diagnosis, classify_aadsts, get, render_cause, render_fix

# DESIGN.md "Diagnosis codes" plus the codes the brief adds.
DESIGN_CODES = {
    "secret_expired", "secret_expiring", "secret_invalid", "certificate_invalid", "app_not_found",
    "app_disabled", "tenant_not_found", "refresh_token_revoked", "refresh_token_expired", "consent_missing",
    "user_disabled", "user_locked", "password_expired", "user_not_assigned", "mfa_required",
    "conditional_access_blocked", "signin_frequency", "auth_failed", "authenticated_not_connected",
    "smtp_auth_disabled", "send_as_denied", "access_policy_denied", "permission_missing",
    "mailbox_not_found", "ews_disabled", "throttled", "idp_unreachable", "dns_error", "connection_refused",
    "tls_error", "timeout", "inbox_backlog", "blocked_by_token", "unclassified",
}
EXTRA_CODES = {
    "smtp_auth_disabled_mailbox", "config_error", "graph_unreadable", "no_refresh_token",
    "certificate_expiring", "credential_not_found", "wrong_account", "ews_retiring", "consumer_not_collecting",
    "canary_not_delivered",
}

# M365_FACTS.md token endpoint table / DESIGN.md "from" column.
EXPECTED_AADSTS = {
    7000222: "secret_expired",
    7000215: "secret_invalid",
    700016: "app_not_found",
    7000112: "app_disabled",
    70001: "app_disabled",
    90002: "tenant_not_found",
    70008: "refresh_token_expired",
    700082: "refresh_token_expired",
    50173: "refresh_token_revoked",
    70043: "signin_frequency",
    65001: "consent_missing",
    65004: "consent_missing",
    90094: "consent_missing",
    50057: "user_disabled",
    50055: "password_expired",
    50053: "user_locked",
    53003: "conditional_access_blocked",
    53000: "conditional_access_blocked",
    50076: "mfa_required",
    50079: "mfa_required",
    50074: "mfa_required",
    50105: "user_not_assigned",
    700027: "certificate_invalid",
    700024: "certificate_invalid",
    # added with the corrected M365_FACTS.md (2026-12-02)
    50078: "mfa_required",
    530035: "security_defaults_blocked",
    70000: "refresh_token_invalid",
    9002313: "refresh_token_invalid",
    700025: "public_client_token",
    500011: "resource_not_found",
    50196: "throttled",
    90055: "throttled",
    90033: "service_unavailable",
    7000218: "secret_invalid",
    50011: "redirect_uri_mismatch",
    500112: "redirect_uri_mismatch",
}

NEEDS_REAUTH = {
    "refresh_token_revoked", "refresh_token_expired", "signin_frequency", "mfa_required", "password_expired",
    "user_disabled", "user_locked", "no_refresh_token", "wrong_account", "security_defaults_blocked",
    "refresh_token_invalid", "public_client_token",
}
NEEDS_ROTATION = {"secret_expired", "secret_expiring", "certificate_invalid", "certificate_expiring"}
WARNINGS = {
    "secret_expiring", "certificate_expiring", "throttled", "inbox_backlog", "graph_unreadable",
    "credential_not_found", "secret_replicating", "ews_retiring",
}

ALL_FACTS = {
    "system": "House-on-the-Hill helpdesk",
    "integration": "helpdesk-support",
    "mailbox": "support@contoso.com",
    "account": "helpdesk-mail@contoso.com",
    "client_id": "66666666-7777-8888-9999-000000000000",
    "app": "helpdesk",
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "permission": "Mail.ReadWrite",
    "secret_field": "OAuth Scripts > oauth:email > Client Secret",
    "days_left": "12",
    "expires_on": "2027-01-31",
    "reauth_url": "https://mailwarden.example/reauth/abc",
    "login": "helpdesk-mail@contoso.com",
    "ews_retirement": "yes",
    "detail": "NO AUTHENTICATE failed.",
}
PLACEHOLDER = re.compile(r"[{}]")
DEFAULT_MARKERS = ("<integration>", "<mailbox address>", "<signing-in account>", "<app registration>")


def rendered(code, **facts):
    return [render_cause(code, **facts), *render_fix(code, **facts)]


def test_catalog_holds_every_design_code_and_the_extras():
    assert DESIGN_CODES | EXTRA_CODES <= set(CATALOG)


def test_catalog_keys_match_codes_and_are_unique():
    assert all(key == d.code for key, d in CATALOG.items())
    assert len(CATALOG) == len(diagnoses._ENTRIES)


def test_diagnosis_is_frozen_with_the_agreed_fields():
    names = [f.name for f in dataclasses.fields(Diagnosis)]
    assert names == ["code", "title", "cause", "fix", "needs_reauth", "needs_rotation", "needs_admin",
                     "severity", "category"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["secret_expired"].title = "x"


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_every_diagnosis_is_complete(code):
    d = CATALOG[code]
    assert d.title and len(d.title) <= 60
    assert d.cause.strip()
    assert isinstance(d.fix, tuple) and d.fix and all(step.strip() for step in d.fix)
    assert d.severity in diagnoses.SEVERITIES
    assert d.category in diagnoses.CATEGORIES


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_templates_use_only_known_placeholders(code):
    d = CATALOG[code]
    for template in (d.cause, *d.fix):
        names = {name for _, name, _, _ in diagnoses._FORMATTER.parse(template) if name is not None}
        assert names <= set(diagnoses.PLACEHOLDERS), (template, names)


def test_aadsts_map_matches_the_facts():
    assert AADSTS_CODES == EXPECTED_AADSTS
    assert set(AADSTS_CODES.values()) <= set(CATALOG)


@pytest.mark.parametrize(("numbers", "expected"), [
    ([7000222], "secret_expired"),
    ([9999999, 50173, 7000222], "refresh_token_revoked"),
    ((n for n in [700082]), "refresh_token_expired"),
    (["53003"], "conditional_access_blocked"),
    ([None, "x", 65001], "consent_missing"),
    ([12345], "unclassified"),
    ([], "unclassified"),
    (None, "unclassified"),
])
def test_classify_aadsts_first_known_code_wins(numbers, expected):
    assert classify_aadsts(numbers) == expected


def test_get_falls_back_to_unclassified():
    assert get("secret_expired") is CATALOG["secret_expired"]
    assert get("no_such_code") is CATALOG["unclassified"]
    assert get(None) is CATALOG["unclassified"]
    assert get("") is CATALOG["unclassified"]


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_renders_without_facts_leave_no_placeholder(code):
    for text in rendered(code):
        assert not PLACEHOLDER.search(text), text
        assert "None" not in text
        assert "()" not in text and not text.endswith(" ")


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_renders_with_all_facts_leave_no_placeholder_or_default(code):
    texts = rendered(code, **ALL_FACTS)
    for text in texts:
        assert not PLACEHOLDER.search(text), text
        assert not any(marker in text for marker in DEFAULT_MARKERS), text
    assert 2 <= len(texts) <= 1 + len(CATALOG[code].fix)  # the cause and the steps that apply to these facts


def test_none_and_blank_facts_get_defaults():
    steps = render_fix("smtp_auth_disabled_mailbox", mailbox=None, system="  ")
    assert "Set-CASMailbox -Identity <mailbox address> -SmtpClientAuthenticationDisabled $false" in steps[0]
    assert "the consuming system" in steps[-1]


def test_facts_are_filled_into_commands():
    steps = render_fix("access_policy_denied", mailbox="q@contoso.com", client_id="abc-123")
    assert "Test-ApplicationAccessPolicy -Identity q@contoso.com -AppId abc-123" in steps[0]
    tenant = render_fix("smtp_auth_disabled", mailbox="q@contoso.com")
    assert any("Set-TransportConfig -SmtpClientAuthenticationDisabled $false" in s for s in tenant)
    assert any("Set-CASMailbox -Identity q@contoso.com" in s for s in tenant)


def test_fact_values_are_not_formatted_again_and_extra_facts_are_ignored():
    cause = render_cause("auth_failed", mailbox="a{app}b@x", detail="{0} {mailbox}", secret="s3cr3t-value")
    assert "a{app}b@x" in cause and "{0} {mailbox}" in cause
    assert "s3cr3t" not in " ".join(rendered("secret_expired", secret="s3cr3t-value"))


def test_detail_is_optional_in_causes():
    assert render_cause("timeout").endswith("timeout.")
    assert render_cause("timeout", detail="read timed out after 30 s").endswith("read timed out after 30 s")
    assert render_cause("auth_failed", detail="535 5.7.3") .startswith(
        "The mail server refused the OAuth login for <mailbox address> (535 5.7.3)")


def test_reauth_step_uses_the_link_or_the_command():
    with_link = " ".join(render_fix("refresh_token_revoked", reauth_url="https://mw/reauth/t", account="u@c"))
    assert "open https://mw/reauth/t" in with_link and "u@c" in with_link
    without = " ".join(render_fix("refresh_token_revoked", integration="helpdesk-support"))
    assert "mailwarden reauth helpdesk-support" in without


def test_secret_field_default_follows_the_known_system():
    oracle = " ".join(render_fix("secret_expired", system="Oracle B2C Service"))
    assert "CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET" in oracle
    enaio = " ".join(render_fix("secret_expired", system="enaio server"))
    assert "OfficeClientSecret" in enaio
    hoth = " ".join(render_fix("secret_expired", system="House-on-the-Hill helpdesk"))
    assert "OAuth Scripts" in hoth
    other = " ".join(render_fix("secret_expired", system="Acme CRM"))
    assert "Acme CRM, paste the new Value into its client secret setting" in other
    explicit = " ".join(render_fix("secret_expired", system="Oracle B2C Service", secret_field="FIELD_X"))
    assert "FIELD_X" in explicit and "CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET" not in explicit


def test_unknown_code_renders_unclassified():
    assert render_fix("nope") == render_fix("unclassified")
    assert render_cause(None) == render_cause("unclassified")


def test_needs_reauth_exactly_on_sign_in_codes():
    assert {c for c, d in CATALOG.items() if d.needs_reauth} == NEEDS_REAUTH


def test_needs_rotation_exactly_on_new_credential_codes():
    assert {c for c, d in CATALOG.items() if d.needs_rotation} == NEEDS_ROTATION


@pytest.mark.parametrize("code", [
    "consent_missing", "user_not_assigned", "smtp_auth_disabled", "smtp_auth_disabled_mailbox",
    "send_as_denied", "access_policy_denied", "permission_missing", "app_disabled", "user_disabled",
    "conditional_access_blocked", "graph_unreadable",
])
def test_admin_codes(code):
    assert CATALOG[code].needs_admin


@pytest.mark.parametrize("code", ["secret_expired", "throttled", "timeout", "refresh_token_expired",
                                  "inbox_backlog", "blocked_by_token"])
def test_not_admin_codes(code):
    assert not CATALOG[code].needs_admin


def test_severities():
    assert {c for c, d in CATALOG.items() if d.severity == "warning"} == WARNINGS
    assert {c for c, d in CATALOG.items() if d.severity == "info"} == {"blocked_by_token", "storage_unavailable",
                                                                       "consumer_unknown"}


@pytest.mark.parametrize("code", sorted(NEEDS_REAUTH - {"no_refresh_token", "refresh_token_invalid",
                                                        "public_client_token"}))
def test_reauth_fixes_cover_mailwarden_and_the_system(code):
    steps = render_fix(code, system="Oracle B2C Service", account="svc@contoso.com")
    text = " ".join(steps)
    assert "Re-authorise mailwarden's own token" in text
    assert "separate from Oracle B2C Service's" in text
    assert "private" in text and "svc@contoso.com" in text


@pytest.mark.parametrize("code", ["secret_expired", "secret_expiring", "secret_invalid"])
def test_secret_fixes_name_the_value_and_the_system(code):
    steps = render_fix(code, app="helpdesk", system="Agiloft")
    text = " ".join(steps)
    assert "App registrations > helpdesk > Certificates & secrets" in text
    assert "Value" in text and "not the Secret ID" in text
    assert "Refresh tokens belong to the app, not to one secret" in text
    assert "Agiloft" in steps[-1] or "Agiloft" in steps[-2]
    assert "Configure Inbound Email" in text


def test_specific_fixes_name_the_right_commands():
    def joined(code):
        return " ".join(render_fix(code, mailbox="m@c", account="a@c", client_id="cid"))

    assert "Add-RecipientPermission -Identity m@c -Trustee a@c -AccessRights SendAs" in joined("send_as_denied")
    assert "New-ServicePrincipal -AppId cid" in joined("auth_failed")
    assert "-AccessRights FullAccess" in joined("authenticated_not_connected")
    assert "Users and groups" in joined("user_not_assigned")
    assert "Grant admin consent" in joined("consent_missing")
    assert "Application.Read.All" in joined("graph_unreadable")
    assert "mailwarden validate --resolve" in joined("config_error")
    assert "Revoke-MgUserSignInSession" in render_cause("refresh_token_revoked")


@pytest.mark.parametrize("code", ["ews_disabled", "ews_forbidden"])
def test_ews_refusals_tell_the_shutdown_date_for_exchange_online_only(code):
    """EWS shuts down in Exchange Online on 1 April 2027; on-premises EWS is not retired (M365_FACTS.md)."""
    online = " ".join(render_fix(code, ews_retirement="yes", system="Agiloft"))
    assert "1 April 2027" in online and "Microsoft Graph" in online and "Agiloft" in online
    on_premises = " ".join(render_fix(code))
    assert "2027" not in on_premises and "2027" not in render_cause(code)


def test_no_refresh_token_points_at_the_reauth_command():
    steps = render_fix("no_refresh_token", integration="helpdesk-support")
    assert "mailwarden reauth helpdesk-support" in steps[0]


def test_a_new_secret_runbook_names_a_sign_in_only_for_delegated_integrations():
    """The step about existing sign-ins surviving a new secret is for delegated integrations: for an app-only
    one (enaio over SMTP) it named an unfilled <signing-in account>."""
    facts = {"system": "enaio", "app": "enaio SMTP OAuth2", "integration": "enaio-notify"}
    for code in ("secret_expired", "secret_expiring", "secret_invalid"):
        app_only = diagnoses.render_fix(code, flow="app", **facts)
        assert not any("sign-in" in s or "<signing-in account>" in s for s in app_only), (code, app_only)
        delegated = diagnoses.render_fix(code, flow="delegated", account="b2c-support@contoso.com", **facts)
        assert any("existing sign-ins survive" in s and "b2c-support@contoso.com" in s for s in delegated), code


TRANSIENT = ("throttled", "service_unavailable", "secret_replicating", "timeout", "idp_unreachable", "dns_error",
             "connection_refused", "tls_error")
PERMISSION_ADVICE = ("Add-MailboxPermission", "API permissions", "Grant admin consent", "Add-RecipientPermission",
                     "New-ServicePrincipal", "Application.Read.All")


@pytest.mark.parametrize("code", TRANSIENT)
@pytest.mark.parametrize("flow", ["app", "delegated"])
def test_no_transient_diagnosis_gives_permission_advice(code, flow):
    """Issue 13: a throttled or transient reply never produces a permission fix, for either flow."""
    text = " ".join(render_fix(code, flow=flow, **ALL_FACTS)) + render_cause(code, **ALL_FACTS)
    assert not any(word in text for word in PERMISSION_ADVICE), (code, text)
