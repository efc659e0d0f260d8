"""Every way the web reauthorisation refuses, and keeps the stored token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from starlette.testclient import TestClient

from mailwarden.monitor import reauth_links as links
from mailwarden_sandbox.browser import SignInError, cancel, sign_in

from .conftest import BASE, outcome_of


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


def _cache(env):
    return bytes(env.rt.tokens.stored_row("subject").ciphertext)


def _results(env):
    return [a.result for a in env.rt.store.reauth.reauth_attempts("subject")]


def test_wrong_user_is_refused_and_the_old_token_kept(revoked):
    env = revoked()
    other, pw = f"someone-{uuid.uuid4().hex[:6]}@{env.w.upn.split('@')[1]}", "Pw-" + uuid.uuid4().hex[:8]
    env.w.ctl.add_user(env.w.tenant_id, upn=other, password=pw)
    before = _cache(env)
    back = sign_in(env.start(), other, pw, env.w.sb.ca_path)
    page = env.client.get(back)
    assert page.status_code == 403 and outcome_of(page.text) == "wrong_account"
    assert other in page.text and env.w.upn in page.text
    assert _cache(env) == before  # nothing stored
    assert len(env.rt.store.reauth.open_reauth_requests()) == 1  # the link still works for the right user
    attempt = env.rt.store.reauth.reauth_attempts("subject")[-1]
    assert (attempt.result, attempt.signed_in_as) == ("wrong_account", other.lower())
    back = sign_in(env.start(), env.w.upn, env.w.password, env.w.sb.ca_path)
    assert outcome_of(env.client.get(back).text) == "ok"


def test_cancel_shows_a_clear_page(revoked):
    env = revoked()
    back = cancel(env.start(), env.w.sb.ca_path)
    assert "error=access_denied" in back and "error_subcode=cancel" in back
    page = env.client.get(back)
    assert page.status_code == 400 and outcome_of(page.text) == "cancelled"
    assert "Sign-in cancelled" in page.text
    assert _results(env) == ["cancelled"]


def test_expired_link_is_refused(revoked):
    env = revoked()
    now = datetime.now(UTC)
    store = env.rt.store
    store.reauth.close_reauth_request(store.reauth.open_reauth_requests()[0].id, "test", now)
    store.reauth.reauth_link_ttl = timedelta(seconds=-60)
    req = store.reauth.open_reauth_request("subject", "refresh_token_revoked", now)
    link = links.url_for(BASE, links.link_key(env.rt.cipher), req)
    assert links.for_runtime(env.rt)() == {}  # an expired link goes into no alert
    page = env.client.get(link)
    assert page.status_code == 410 and outcome_of(page.text) == "link_expired"
    assert env.client.post(link, data={}).status_code == 403  # no CSRF token: nothing starts either
    assert _results(env) == ["link_expired"]


def test_invalid_or_tampered_link_is_refused(revoked):
    env = revoked()
    link = env.link()
    for bad in (link[:-2] + ("AA" if not link.endswith("AA") else "BB"), BASE + "/reauth/garbage",
                BASE + "/reauth/1.1.x"):
        page = env.client.get(bad)
        assert page.status_code == 404 and outcome_of(page.text) == "invalid_link"
        assert "subject" not in page.text  # nothing leaks without a valid link


def test_tampered_state_and_replayed_callback_are_refused(revoked):
    env = revoked()
    back = sign_in(env.start(), env.w.upn, env.w.password, env.w.sb.ca_path)
    forged = env.client.get(_with_query(back, state="forged-" + uuid.uuid4().hex))
    assert forged.status_code == 400 and outcome_of(forged.text) == "unknown_state"
    ok = env.client.get(back)  # the genuine response still completes
    assert outcome_of(ok.text) == "ok"
    replay = env.client.get(back)
    assert replay.status_code == 400 and outcome_of(replay.text) == "unknown_state"
    # the started attempt's row (ok), then one row per refused callback (no integration known)
    assert [a.result for a in env.rt.store.reauth.reauth_attempts()] == ["ok", "unknown_state", "unknown_state"]


def test_tampered_pkce_is_refused(revoked):
    env = revoked()
    before = _cache(env)
    auth_uri = _with_query(env.start(), code_challenge="A" * 43)
    page = env.client.get(sign_in(auth_uri, env.w.upn, env.w.password, env.w.sb.ca_path))
    assert page.status_code == 400 and outcome_of(page.text) == "refused"
    assert "AADSTS501481" in page.text
    assert _cache(env) == before and len(env.rt.store.reauth.open_reauth_requests()) == 1


def test_callback_in_another_browser_is_refused(revoked):
    env = revoked()
    back = sign_in(env.start(), env.w.upn, env.w.password, env.w.sb.ca_path)
    with TestClient(env.client.app, base_url=BASE) as other:
        page = other.get(back)
    assert page.status_code == 400 and outcome_of(page.text) == "other_browser"
    assert len(env.rt.store.reauth.open_reauth_requests()) == 1


def test_redirect_uri_mismatch_explains_aadsts50011(revoked):
    env = revoked()
    env.w.ctl.patch_app(env.w.app_id, redirect_uris=["https://helpdesk.example/oauth"])
    landing = env.client.get(env.link())
    assert "AADSTS50011" in landing.text and f"{BASE}/auth/callback" in landing.text
    auth_uri = env.start()
    with pytest.raises(SignInError) as err:  # Microsoft's own error page: no way back to mailwarden
        sign_in(auth_uri, env.w.upn, env.w.password, env.w.sb.ca_path)
    assert err.value.code == 50011
    # should a response ever come back with it, the callback explains it too
    state = parse_qs(urlsplit(auth_uri).query)["state"][0]
    page = env.client.get("/auth/callback?" + urlencode({
        "error": "invalid_request", "state": state, "error_description": str(err.value)}))
    assert outcome_of(page.text) == "redirect_uri"
    assert f"{BASE}/auth/callback" in page.text and "Web" in page.text
    assert _results(env) == ["redirect_uri"]


def test_user_not_assigned_explains_aadsts50105(revoked):
    env = revoked()
    env.w.ctl.patch_app(env.w.app_id, assignment_required=True)
    page = env.client.get(sign_in(env.start(), env.w.upn, env.w.password, env.w.sb.ca_path))
    assert outcome_of(page.text) == "not_assigned"
    assert "Enterprise applications" in page.text and "Users and groups" in page.text
    env.w.ctl.assign_user(env.w.app_id, env.w.upn)
    assert outcome_of(env.client.get(sign_in(env.start(), env.w.upn, env.w.password, env.w.sb.ca_path)).text) == "ok"


def test_rate_limited(revoked):
    from mailwarden.monitor.web.reauth import Limiter

    env = revoked()
    env.client.app.state.reauth_limiter = Limiter(limit=2)
    codes = [env.client.get(BASE + "/reauth/garbage").status_code for _ in range(3)]
    assert codes == [404, 404, 429]
    # the callback has its own limit: junk links do not lock out the OAuth callback
    env.client.app.state.reauth_callback_limiter = Limiter(limit=1)
    assert [env.client.get(BASE + "/auth/callback?state=x").status_code for _ in range(2)] == [400, 429]


def test_limiter_window():
    from mailwarden.monitor.web.reauth import Limiter

    lim = Limiter(limit=2, window_s=10)
    assert [lim.allow("a", t) for t in (0, 1, 2)] == [True, True, False]
    assert lim.allow("b", 2) and lim.allow("a", 11)
