"""Reauthorisation in a real browser (Playwright driving Debian's chromium): the alert's link, the button, the
sandbox's sign-in form. Cancelling, then signing in as another user, are refused with their pages and leave the
link usable; the right user gets the success page with green checks; the used link is then refused.
Screenshot: tests/artifacts/reauth_success.png."""

from __future__ import annotations

from tests.browser_fixtures import free_port, serving
from tests.dashboards.conftest import ARTIFACTS

from .conftest import CAPTURED


def test_reauthorise_in_a_browser(browser, revoked):
    port = free_port()
    env = revoked(base_url=f"http://127.0.0.1:{port}")
    env.dispatch()
    link = env.link()
    assert link in CAPTURED[0]["body"]
    with serving(env.client.app, port):
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 900})
        try:
            page = context.new_page()
            errors: list[str] = []  # mailwarden's pages only (the sandbox serves no favicon)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and r.url.startswith(env.rt.config.web.base_url) else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # cancel at Microsoft's sign-in page: a clear page, nothing stored
            page.goto(link)
            page.click("#start")
            page.wait_for_selector("form#signin")
            page.click("form#cancel button[type=submit]")
            page.wait_for_selector("#reauth-cancelled", timeout=30_000)
            # another user: refused as the wrong account, the revoked token kept, the link still usable
            other, other_pw = f"someone-else@{env.w.upn.split('@')[1]}", "Pw-other-123"
            env.w.ctl.add_user(env.w.tenant_id, upn=other, password=other_pw)
            before = env.rt.tokens.stored_row("subject").ciphertext
            page.goto(link)
            page.click("#start")
            page.wait_for_selector("form#signin")
            page.fill("input[name=login]", other)
            page.fill("input[name=passwd]", other_pw)
            page.click("form#signin button[type=submit]")
            page.wait_for_selector("#reauth-wrong_account", timeout=30_000)
            assert env.w.upn in page.text_content("main") and other in page.text_content("main")
            assert env.rt.tokens.stored_row("subject").ciphertext == before
            errors.clear()  # the refusals above answer 400/403 on purpose
            # the right user
            page.goto(link)
            assert env.w.upn in page.text_content("#account")
            page.click("#start")
            page.wait_for_selector("form#signin")  # the sandbox's sign-in page, the account already filled in
            assert page.input_value("input[name=login]") == env.w.upn
            page.fill("input[name=passwd]", env.w.password)
            page.click("form#signin button[type=submit]")
            page.wait_for_selector("#reauth-ok", timeout=30_000)
            chips = page.locator(".reauth-checks li").evaluate_all("els => els.map(e => e.dataset.status)")
            assert chips and set(chips) == {"ok"}
            assert page.locator(".reauth-checks .chip.s-ok").count() == len(chips)
            assert "Test helpdesk" in page.text_content("main")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "reauth_success.png"), full_page=True)
            assert not errors, errors
            reused = page.goto(link)  # single-use: the link is spent
            assert reused is not None and reused.status == 410
        finally:
            context.close()
    assert env.rt.store.reauth.open_reauth_requests() == []
    env.dispatch()
    assert CAPTURED[-1]["title"].startswith("[mailwarden] RESOLVED")
