"""Two Microsoft behaviours the reauthorisation must follow, played by the sandbox from modelled state.

1. A refresh token issued to a public client (device code, or any grant made without a client credential) is
   refreshed without a client secret: presenting one answers 401 invalid_client AADSTS700025 ("Client is public
   so neither 'client_assertion' nor 'client_secret' should be presented.", M365_FACTS.md, corrected item 5).
2. A user's UPN and mail (primary SMTP address) may differ (UPN anna.smith@, mail anna@); an integration's
   `account` is often the mail address. Entra ID's directory (Graph /users, User.Read.All) says which user an
   address belongs to; the ID token carries `preferred_username` = the UPN and `email` = the mail address.
"""

from __future__ import annotations

import threading
import uuid

import msal
import pytest
import requests

from mailwarden.checks.base import Status
from mailwarden.monitor import reauth as flows
from tests.e2e.test_reauth import browser, msal_refresh_token
from tests.e2e.test_reauth import reauth as run_reauth

SCOPES = ["https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"]
USER_READ = ["Application.Read.All", "User.Read.All"]


# -- helpers ---------------------------------------------------------------------------------------------

def shared_mailbox(ids):
    """A House-on-the-Hill layout: the signing-in user has FullAccess and SendAs on a shared mailbox."""
    return {"mailboxes": [
        {"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["upn"]], "send_as": [ids["upn"]]},
        {"address": ids["upn"], "type": "user"},
    ]}


def device_code_sign_in(w) -> flows.ReauthResult:
    """`mailwarden reauth NAME --device-code`, with the user approving the code as they would on /devicelogin."""
    rt = w.runtime or w.open()
    shown: list[str] = []
    out: dict = {}

    def sign_in():
        try:
            out["result"] = flows.device_code(rt.tokens, rt.config.integration("subject"), shown.append)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=sign_in)
    t.start()
    for _ in range(200):
        if shown or not t.is_alive():
            break
        t.join(0.05)
    assert shown, out
    w.ctl.approve_device_code(shown[0].split("enter the code ")[1].split()[0], w.upn)
    t.join(30)
    if "error" in out:
        raise out["error"]
    return out["result"]


def public_client_refresh_token(w) -> str:
    """A refresh token obtained outside mailwarden by a public client (device code, no secret), straight MSAL."""
    http = requests.Session()
    http.verify, http.trust_env = w.sb.ca_path, False
    pca = msal.PublicClientApplication(w.app_id, authority=f"{w.sb.base_url}/{w.tenant_id}",
                                       instance_discovery=False, http_client=http)
    flow = pca.initiate_device_flow(SCOPES)
    assert "user_code" in flow, flow
    w.ctl.approve_device_code(flow["user_code"], w.upn)
    result = pca.acquire_token_by_device_flow(flow)
    assert "refresh_token" in result, result
    return result["refresh_token"]


def refresh_with_the_secret(w) -> dict:
    """What mailwarden did before: refresh the stored token through the confidential app (with its secret)."""
    rt = w.open()
    cache = msal.SerializableTokenCache()
    cache.deserialize(rt.tokens.load_cache("subject").serialize())
    app = rt.tokens.new_app("subject", cache)
    account = app.get_accounts()[0]
    return app.acquire_token_silent_with_error(SCOPES, account, force_refresh=True)


@pytest.fixture
def short_tokens(sandbox):
    """Access tokens that live 60 s: under MSAL's 5-minute margin, so every use of a token refreshes it."""
    sandbox.control.set_token_lifetime(60)
    yield
    sandbox.control.set_token_lifetime(3600)


def row(w):
    return w.open().tokens.stored_row("subject")


# -- 1. public-client refresh tokens ---------------------------------------------------------------------

def test_device_code_token_is_refreshed_without_the_secret(world, short_tokens):
    """Device-code sign-in, then the token check (a forced refresh) and the POP check (its token expired, so a
    refresh too) keep working, run after run and from a new process. Refreshed with the app's secret, as
    mailwarden did before, the same stored token is refused with AADSTS700025: the failure this fixes."""
    w = world("delegated", checks={"token": {"require": ["exchange:POP.AccessAsUser.All", "exchange:SMTP.Send"]},
                                   "pop": {}}, exchange=shared_mailbox)
    w.ctl.patch_app(w.app_id, public_client=True)
    w.rewrite(lambda d: d["apps"]["subject"].update(public_client=True))
    result = device_code_sign_in(w)
    assert result.account == w.upn.lower() and result.details["public_client"] is True
    stored = row(w)
    assert stored.public_client is True and stored.oid == result.details["oid"]
    for _ in range(2):
        token, pop = w.run("token"), w.run("pop")
        assert (token.status, pop.status) == (Status.OK, Status.OK), (token.summary, pop.summary)
    assert row(w).public_client is True  # the rotated tokens were saved as public again
    w.open()  # a new process reads the kind from the database
    token, pop = w.run("token"), w.run("pop")
    assert (token.status, pop.status) == (Status.OK, Status.OK), (token.summary, pop.summary)
    # the old behaviour, on the very same stored token: refreshed with the app's secret
    refused = refresh_with_the_secret(w)
    assert 700025 in refused.get("error_codes", []) and refused.get("error") == "invalid_client", refused
    assert "Client is public" in refused["error_description"]


def test_import_of_a_public_client_token_retries_without_the_secret(world, tmp_path):
    """A device-code refresh token from elsewhere: Entra ID refuses it with the app's secret (700025), mailwarden
    redeems it without, stores it as public, and the token check keeps refreshing it that way."""
    w = world("delegated")
    w.ctl.patch_app(w.app_id, public_client=True)  # "Allow public client flows"; mailwarden's config says nothing
    rt = public_client_refresh_token(w)
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = run_reauth(w, None, "--import", str(f))
    assert result.exit_code == 0, result.output
    assert f"signed in as {w.upn.lower()}" in result.output and "public client" in result.output
    assert rt not in result.output and w.secret not in result.output
    assert row(w).public_client is True
    for _ in range(2):
        outcome = w.run("token")
        assert outcome.status == Status.OK, outcome.summary


def test_import_of_a_public_client_token_when_public_flows_are_off_stores_nothing(world, tmp_path):
    """The app no longer allows public client flows: the secret is refused (700025) and so is redeeming without
    it (7000218). Nothing is stored, and the refusal says that the token belongs to a public client."""
    w = world("delegated")
    w.ctl.patch_app(w.app_id, public_client=True)
    rt = public_client_refresh_token(w)
    w.ctl.patch_app(w.app_id, public_client=False)
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = run_reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    assert "issued to a public client" in result.output and "AADSTS7000218" in result.output
    assert rt not in result.output
    assert w.open().tokens.stored_row("subject") is None


def test_confidential_import_and_sign_in_stay_confidential(world, tmp_path):
    w = world("delegated")
    f = tmp_path / "rt.txt"
    f.write_text(msal_refresh_token(w, w.upn, w.password))
    result = run_reauth(w, None, "--import", str(f))
    assert result.exit_code == 0, result.output
    assert "public client" not in result.output
    assert row(w).public_client is False and row(w).oid
    assert run_reauth(w, browser(w)).exit_code == 0
    assert row(w).public_client is False
    assert w.run("token").status == Status.OK


# -- 2. the reauthorisation's identity check -------------------------------------------------------------

def add_anna(w, **extra) -> dict:
    """anna.smith@<domain>, whose mail is anna@<domain>; the integration's account becomes anna@<domain>."""
    domain = w.upn.split("@")[1]
    tag = uuid.uuid4().hex[:4]
    anna = {"upn": f"anna.smith{tag}@{domain}", "mail": f"anna{tag}@{domain}", "password": "Pw-anna-" + tag}
    anna["oid"] = w.ctl.add_user(w.tenant_id, **anna, **extra)["oid"]
    w.rewrite(lambda d: d["integrations"][0].update(account=anna["mail"]))
    return anna


def add_bob(w) -> tuple[str, str]:
    upn, pw = f"bob-{uuid.uuid4().hex[:4]}@{w.upn.split('@')[1]}", "Pw-bob-123"
    w.ctl.add_user(w.tenant_id, upn=upn, password=pw)
    return upn, pw


def test_mail_address_account_accepted_through_graph_and_another_user_refused(world):
    w = world("delegated", monitor_roles=USER_READ)
    anna = add_anna(w)
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert f"signed in as {anna['upn']}" in result.output
    assert (f"Identity: Entra ID (Graph) lists {anna['mail']} as the mail (primary SMTP address) of {anna['upn']} "
            f"(id {anna['oid']})") in result.output
    stored = row(w)
    assert (stored.oid, stored.account, stored.public_client) == (anna["oid"], anna["mail"], False)
    # the token is used for account anna@ although MSAL knows the account as anna.smith@
    assert w.run("token").status == Status.OK
    before = row(w).ciphertext
    bob, bob_pw = add_bob(w)
    refused = run_reauth(w, browser(w, bob, bob_pw))
    assert refused.exit_code == 1 and "[wrong_account]" in refused.output, refused.output
    assert f"signed in as {bob}" in refused.output and f"must be authorised by {anna['mail']}" in refused.output
    assert f"Entra ID (Graph) has no user whose UPN is {anna['mail']}" in refused.output
    assert row(w).ciphertext == before


def test_upn_and_proxy_address_accounts_accepted_through_graph(world):
    w = world("delegated", monitor_roles=USER_READ)
    domain = w.upn.split("@")[1]
    alias = f"helpdesk-anna{uuid.uuid4().hex[:4]}@{domain}"
    anna = add_anna(w)
    w.ctl.patch_user(anna["upn"], proxy_addresses=[f"SMTP:{anna['mail']}", f"smtp:{alias.upper()}"])
    w.rewrite(lambda d: d["integrations"][0].update(account=alias))
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert f"lists {alias} as the proxy address of {anna['upn']}" in result.output
    w.rewrite(lambda d: d["integrations"][0].update(account=anna["upn"]))
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert f"Entra ID (Graph) resolves {anna['upn']} to {anna['upn']} (id {anna['oid']})" in result.output
    bob, bob_pw = add_bob(w)
    refused = run_reauth(w, browser(w, bob, bob_pw))
    assert refused.exit_code == 1 and "[wrong_account]" in refused.output, refused.output
    assert f"resolves {anna['upn']} to {anna['upn']} (id {anna['oid']}), not to {bob}" in refused.output


def test_without_user_read_all_the_id_token_email_then_the_recorded_oid(world):
    """The monitor app lacks User.Read.All (Graph answers 403): the first sign-in is accepted by the ID token's
    email, and says so; its object id is recorded. Once anna's mail no longer names the account, the recorded
    object id still recognises her. Bob is refused in both cases, and the refusal says what was compared."""
    w = world("delegated")  # monitor app: Application.Read.All only
    anna = add_anna(w)
    bob, bob_pw = add_bob(w)
    refused = run_reauth(w, browser(w, bob, bob_pw))
    assert refused.exit_code == 1 and "[wrong_account]" in refused.output, refused.output
    assert "could not read the account from Graph (the monitor app monitor lacks User.Read.All" in refused.output
    assert "compared the sign-in name and the ID token's email" in refused.output
    assert "the User.Read.All application permission" in refused.output  # the hint: how to get the strong evidence
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert ("could not read the account from Graph (the monitor app monitor lacks User.Read.All: Graph answered "
            "403 Authorization_RequestDenied): compared the sign-in name and the ID token's email "
            f"({anna['mail']}) only") in result.output
    assert row(w).oid == anna["oid"]
    assert w.run("token").status == Status.OK
    w.ctl.patch_user(anna["upn"], mail=f"a.smith.new@{w.upn.split('@')[1]}", proxy_addresses=[])
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert (f"compared the object id with the sign-in last accepted for {anna['mail']}: the same user "
            f"(id {anna['oid']})") in result.output
    before = row(w).ciphertext
    refused = run_reauth(w, browser(w, bob, bob_pw))
    assert refused.exit_code == 1 and "[wrong_account]" in refused.output, refused.output
    assert f"nor the user whose sign-in was last accepted for it (id {anna['oid']})" in refused.output
    assert row(w).ciphertext == before
    assert w.run("token").status == Status.OK


def test_without_a_monitor_app_the_sign_in_name_and_email_are_compared(world):
    w = world("delegated")
    anna = add_anna(w)
    w.rewrite(lambda d: d["tenants"]["t"].pop("monitor_app"))
    result = run_reauth(w, browser(w, anna["upn"], anna["password"]))
    assert result.exit_code == 0, result.output
    assert "could not read the account from Graph (tenant t names no monitor_app)" in result.output
    bob, bob_pw = add_bob(w)
    refused = run_reauth(w, browser(w, bob, bob_pw))
    assert refused.exit_code == 1 and "[wrong_account]" in refused.output, refused.output


def test_device_code_sign_in_of_a_mail_address_account(world):
    """The device-code flow goes through the same identity check and records the same facts."""
    w = world("delegated", monitor_roles=USER_READ)
    w.ctl.patch_app(w.app_id, public_client=True)
    w.rewrite(lambda d: (d["apps"]["subject"].update(public_client=True),
                         d["integrations"][0].update(account=f"helpdesk@{w.upn.split('@')[1]}")))
    w.ctl.patch_user(w.upn, mail=f"helpdesk@{w.upn.split('@')[1]}", proxy_addresses=[])
    result = device_code_sign_in(w)
    assert result.details["evidence"] == "graph" and result.details["public_client"] is True
    assert w.run("token").status == Status.OK
