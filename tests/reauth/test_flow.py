"""The link from the alert, through the sandbox's sign-in, to a green integration."""

from __future__ import annotations

from mailwarden.monitor.models import ReauthAttempt
from mailwarden_sandbox.browser import sign_in

from .conftest import CAPTURED, outcome_of


def test_link_sign_in_success_closes_request_and_resolves_incident(revoked):
    env = revoked()
    report = env.dispatch()
    assert report.sent == 1
    link = env.link()
    assert link in CAPTURED[0]["body"]  # the alert's reauthorisation slot
    auth_uri = env.start()
    assert "login_hint=" in auth_uri and "prompt=select_account" in auth_uri and "code_challenge=" in auth_uri
    back = sign_in(auth_uri, env.w.upn, env.w.password, env.w.sb.ca_path)
    page = env.client.get(back)
    assert page.status_code == 200, page.text
    assert outcome_of(page.text) == "ok"
    assert 'data-check="token" data-status="ok"' in page.text
    assert env.rt.store.reauth.open_reauth_requests() == []
    assert [r.closed_by for r in env.rt.store.reauth.reauth_requests()] == ["signed_in"]
    attempts = env.rt.store.reauth.reauth_attempts("subject")
    assert [(a.result, a.signed_in_as, a.client) for a in attempts] == [("ok", env.w.upn.lower(), "testclient")]
    assert attempts[0].flow is None and attempts[0].state_hash is None
    env.dispatch()
    assert CAPTURED[-1]["title"].startswith("[mailwarden] RESOLVED")
    # the link is single-use
    again = env.client.get(link)
    assert again.status_code == 410 and outcome_of(again.text) == "link_used"
    assert env.rt.store.count(ReauthAttempt) == 2
