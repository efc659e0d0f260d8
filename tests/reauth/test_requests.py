"""Where ReauthRequests open and close, the alert's link slot and the dashboard's link."""

from __future__ import annotations

from datetime import UTC, datetime

from mailwarden.monitor import reauth_links as links
from tests.dashboards.conftest import login

from .conftest import BASE, CAPTURED


def test_one_open_request_per_integration_in_the_alert(revoked):
    env = revoked()
    assert env.w.run("token").status == "fail"  # a second needs_reauth result: still one request
    reqs = env.rt.store.reauth.open_reauth_requests()
    assert [(r.integration, r.account, r.code) for r in reqs] == [("subject", env.w.upn, "refresh_token_revoked")]
    assert env.dispatch().sent == 1
    body = CAPTURED[0]["body"]
    assert "Re-authorise" in body and env.link() in body
    assert env.link().startswith(BASE + "/reauth/")
    assert reqs[0].nonce not in env.link()


def test_the_next_good_token_check_closes_it(revoked):
    env = revoked()
    env.w.sign_in()  # re-authorised another way (`mailwarden reauth`)
    assert env.w.run("token").status == "ok"
    assert env.rt.store.reauth.open_reauth_requests() == []
    assert [r.closed_by for r in env.rt.store.reauth.reauth_requests()] == ["token_ok"]
    assert env.client.get(env.rt.config.web.base_url + "/reauth/" + links.token_for(
        links.link_key(env.rt.cipher), env.rt.store.reauth.reauth_requests()[0])).status_code == 410


def test_no_request_for_app_only_integrations(world):
    w = world("app")
    rt = w.open()
    assert rt.store.reauth.open_reauth_request("subject", "refresh_token_revoked", datetime.now(UTC)) is None


def test_dashboard_shows_the_link_behind_the_login(revoked):
    env = revoked()
    assert env.client.get("/integrations/subject", follow_redirects=False).status_code == 303  # login first
    assert login(env.client, "x").status_code == 303
    page = env.client.get("/integrations/subject")
    assert page.status_code == 200 and f'href="{env.link()}"' in page.text


def test_reauth_page_needs_no_login_and_says_only_name_and_account(revoked):
    env = revoked()
    page = env.client.get(env.link())
    assert page.status_code == 200
    assert "subject" in page.text and env.w.upn in page.text and "private" in page.text.lower()
    assert env.w.app_id not in page.text and env.w.tenant_id not in page.text
    csp = page.headers["content-security-policy"]
    assert "form-action 'self' https://127.0.0.1:" in csp and "script-src 'self'" in csp
    assert "<script>" not in page.text
