"""The web reauthorisation's identity check when the configured account is the user's mail address (UPN
anna.smith@, account anna@): the right person is accepted, another is refused, and the audit says what evidence
decided it (Graph through the monitor app, or the weaker comparison when it lacks User.Read.All)."""

from __future__ import annotations

from mailwarden_sandbox.browser import sign_in
from tests.fidelity.test_public_client_and_identity import USER_READ, add_anna, add_bob

from .conftest import outcome_of


def _anna(found: dict):
    def prepare(w):
        found.update(add_anna(w))
        return found["upn"], found["password"]
    return prepare


def _attempt(env):
    return env.rt.store.reauth.reauth_attempts("subject")[-1]


def test_mail_address_account_through_graph(revoked):
    anna: dict = {}
    env = revoked(prepare=_anna(anna), monitor_roles=USER_READ)
    bob, bob_pw = add_bob(env.w)
    page = env.client.get(sign_in(env.start(), bob, bob_pw, env.w.sb.ca_path))
    assert page.status_code == 403 and outcome_of(page.text) == "wrong_account"
    attempt = _attempt(env)
    assert (attempt.result, attempt.signed_in_as) == ("wrong_account", bob.lower())
    assert f"Entra ID (Graph) has no user whose UPN is {anna['mail']}" in attempt.detail
    page = env.client.get(sign_in(env.start(), anna["upn"], anna["password"], env.w.sb.ca_path))
    assert page.status_code == 200 and outcome_of(page.text) == "ok", page.text
    assert 'data-check="token" data-status="ok"' in page.text
    attempt = _attempt(env)
    assert (attempt.result, attempt.signed_in_as) == ("ok", anna["upn"])
    assert (f"identity: Entra ID (Graph) lists {anna['mail']} as the mail (primary SMTP address) of {anna['upn']} "
            f"(id {anna['oid']})") in attempt.detail
    assert env.rt.store.reauth.open_reauth_requests() == []


def test_mail_address_account_without_user_read_all(revoked):
    anna: dict = {}
    env = revoked(prepare=_anna(anna))  # the monitor app has Application.Read.All only
    bob, bob_pw = add_bob(env.w)
    page = env.client.get(sign_in(env.start(), bob, bob_pw, env.w.sb.ca_path))
    assert page.status_code == 403 and outcome_of(page.text) == "wrong_account"
    # the sign-in before the revocation recorded anna's object id: that is the evidence now
    assert f"nor the user whose sign-in was last accepted for it (id {anna['oid']})" in _attempt(env).detail
    assert "lacks User.Read.All" in _attempt(env).detail
    page = env.client.get(sign_in(env.start(), anna["upn"], anna["password"], env.w.sb.ca_path))
    assert page.status_code == 200 and outcome_of(page.text) == "ok", page.text
    detail = _attempt(env).detail
    assert "could not read the account from Graph (the monitor app monitor lacks User.Read.All" in detail
    assert f"the same user (id {anna['oid']})" in detail
