"""The dashboard from a 390 px phone to a 1400 px desk, light and dark (issue 19; WCAG 2.1's reflow, contrast,
pausing and keyboard criteria): Playwright driving Debian's chromium against the demo's web app, as
tests/dashboards/test_browser.py does.

- no page scrolls sideways: ``document.scrollingElement.scrollWidth == clientWidth`` at 390 and 1400 px;
- a screenshot of every page at both widths in both themes goes to ``tests/artifacts/screenshots/``
  (``PAGE-WIDTH-SCHEME.png``; git-ignored), for a person to look at;
- the theme button's choice outlives a reload; the page never reloads itself while something on it has the focus
  (a link too) or while updates are paused; commands have a copy button, and are readable without script;
- the overview's failing rows name the diagnosis, not the whole first fix step; a failing delegated
  integration's page opens with the re-authorisation button; 404/410/500 are pages in the app's layout.

Skipped without chromium or playwright, except under MAILWARDEN_REQUIRE_SERVICES=1 (CI), where that is a failure.
The accessibility audit (axe-core) is tests/dashboards/test_a11y.py, on the same harness.

These modules run on a demo world of their own (``world``), not the session's ``demo`` of conftest.py, and their
names sort before the other modules of this folder: several of those expect the session's demo results to be
fresh (younger than twice the demo's 60 s interval), so minutes of browser runs must not come between them.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from mailwarden.monitor.web import pages, views
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from tests.browser_fixtures import serving
from tests.dashboards.conftest import ARTIFACTS, PASSWORD, csrf_of, login

SCREENSHOTS = ARTIFACTS / "screenshots"
WIDTHS = (390, 1400)
SCHEMES = ("light", "dark")
# every page, signed in unless it is the login page; the report is the file `mailwarden report` writes
PAGES = {
    "overview": "/",
    "integration": "/integrations/oracle-b2c-support",  # delegated, token revoked: the re-authorise button
    "integration-powershell": "/integrations/enaio-webclient",  # fix steps with PowerShell to copy
    "incidents": "/incidents",
    "incident": "/incidents/1",  # the demo's first incident: its members and timeline, acknowledge and snooze
    "systems": "/systems",
    "system": "/systems/Oracle%20B2C%20Service",  # two mailboxes of one app, one with the consumer's sign-ins
    "app": "/apps/sinch-contact-center-mail",
    "tenants": "/tenants",
    "secrets": "/secrets",
    "login": "/login",
    "not-found": "/integrations/nosuch",
    "report": "report",
}


# -- the harness (test_a11y.py imports it) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A demo world of this module's own, prepared as conftest.py's ``demo`` is (one cycle of checks, one alert
    dispatch, the hourly rollups)."""
    from mailwarden.monitor import demo as demo_mod
    from mailwarden.monitor.alerting import make_dispatcher

    def prepare():
        env = demo_mod.prepare(tmp_path_factory.mktemp("world"), quiet=True)
        env.run_once()
        make_dispatcher(env.runtime.config, env.runtime.store).run_once()
        env.runtime.store.history.rollup_history(datetime.now(UTC))
        return env

    # in a thread of its own: the checks run in asyncio.run, and Playwright's sync API may be running a loop here
    with ThreadPoolExecutor(1) as pool:
        env = pool.submit(prepare).result()
    try:
        yield env
    finally:
        env.close()


def demo_app(env, admin_hash, *, refresh: float | None = None):
    """The demo's app as `serve` runs it (a Monitor: the re-authorisation link and "Re-run" are shown), signed in
    by password; ``refresh``: another web.refresh."""
    from mailwarden.monitor.scheduler import Monitor

    cfg = env.runtime.config
    if refresh is not None:
        cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"refresh": refresh})})
    return create_app(cfg, env.runtime.store, monitor=Monitor(env.runtime),
                      access=Access(mode="password", user="admin", password_hash=admin_hash))


@pytest.fixture(scope="module")
def site(world, admin_hash, browser, tmp_path_factory):
    """(base URL, signed-in storage state, the report's file URL, env), served for the whole module."""
    from mailwarden.monitor.web.report import render_report

    env = world
    report = tmp_path_factory.mktemp("report") / "status.html"
    report.write_text(render_report(env.runtime.config, env.runtime.store), encoding="utf-8")
    with serving(demo_app(env, admin_hash)) as url:
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, url)
        state = context.storage_state()
        context.close()
        yield url, state, report.as_uri(), env


def sign_in(page, url: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button")
    page.wait_for_url(url + "/")


def open_page(browser, site, name: str, width: int, scheme: str, **context_args):
    """A new context at ``width`` in ``scheme`` (signed in, except for the login page), on page ``name``; returns
    (context, page, console errors)."""
    url, state, report, _ = site
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                  storage_state=None if name == "login" else state, **context_args)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    target = report if PAGES[name] == "report" else url + PAGES[name]
    response = page.goto(target)
    if name == "not-found":
        assert response is not None and response.status == 404
        errors[:] = [e for e in errors if "404" not in e]  # the browser logs the 404 itself
    page.wait_for_load_state("load")
    return context, page, errors


# elements that stick out of the viewport (but those inside a scrolling region of their own, or hidden on purpose)
OUTSIDE = """w => [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && (r.right > w + 1 || r.left < -1) && !e.closest('.scroll-x, .visually-hidden, a.skip, thead');
}).slice(0, 5).map(e => e.outerHTML.slice(0, 120))"""


def overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")


# -- every page, both widths, both themes ----------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(PAGES))
def test_no_page_scrolls_sideways_and_each_is_photographed(browser, site, name, width, scheme):
    context, page, errors = open_page(browser, site, name, width, scheme)
    try:
        scroll, client = overflow(page)
        wide = page.evaluate(OUTSIDE, client)
        assert scroll == client, (name, width, scroll, client, wide)
        assert wide == [], wide
        # the theme applied: the page's background is dark in dark, light in light
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        level = sum(int(x) for x in re.findall(r"\d+", bg)[:3]) / 3
        assert (level < 60) if scheme == "dark" else (level > 200), (scheme, bg)
        assert page.locator("h1").count() >= 1
        assert errors == [], errors
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}-{scheme}.png"), full_page=True)
    finally:
        context.close()


def test_no_page_scrolls_sideways_at_any_width_from_320_px_to_a_wall_screen(browser, site):
    url, state, report, _ = site
    context = browser.new_context(storage_state=state)
    page = context.new_page()
    try:
        for name, path in PAGES.items():
            if name == "login":
                continue  # signed in, /login redirects; it has its own run above
            page.goto(report if path == "report" else url + path)
            wide = []
            for width in [*range(320, 1300, 40), 1920, 2560]:
                page.set_viewport_size({"width": width, "height": 800})
                scroll, client = overflow(page)
                if scroll != client:
                    wide.append((width, scroll))
            assert wide == [], (name, wide)
    finally:
        context.close()


def test_the_header_wraps_and_sign_out_stays_on_screen(browser, site):
    context, page, _ = open_page(browser, site, "overview", 360, "light")
    try:
        box = page.locator("header.top button.link").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
        assert overflow(page)[0] == 360
    finally:
        context.close()


# -- theme -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("system", SCHEMES)
def test_the_theme_button_is_remembered_across_a_reload(browser, site, system):
    other = "light" if system == "dark" else "dark"
    context, page, errors = open_page(browser, site, "overview", 1400, system)
    try:
        toggle = page.locator("#theme-toggle")
        assert toggle.get_attribute("aria-pressed") == ("true" if system == "dark" else "false")
        before = page.evaluate("getComputedStyle(document.body).backgroundColor")
        toggle.click()
        assert page.evaluate("document.documentElement.dataset.theme") == other
        after = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert after != before
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == other
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == after
        assert page.locator("#theme-toggle").get_attribute("aria-pressed") == ("true" if other == "dark" else "false")
        second = context.new_page()  # another page of this browser: the same choice
        second.goto(site[0] + "/incidents")
        assert second.evaluate("getComputedStyle(document.body).backgroundColor") == after
        # back to the system's theme: the choice is forgotten
        page.locator("#theme-toggle").click()
        assert page.evaluate("document.documentElement.dataset.theme") is None
        assert page.evaluate("localStorage.getItem('mailwarden.theme')") is None
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == before
        assert errors == [], errors
    finally:
        context.close()


# -- updates ---------------------------------------------------------------------------------------------------
def test_pages_that_must_not_reload_do_not(world, admin_hash):
    env = world
    app = demo_app(env, admin_hash)
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert 'data-refresh="0"' in c.get("/login").text  # nothing to update; a reload only loses typing
        assert login(c).status_code == 303
        assert 'data-refresh="60"' in c.get("/").text
        assert 'data-refresh="0"' in c.get("/integrations/nosuch").text


# -- commands --------------------------------------------------------------------------------------------------
def test_fix_step_commands_have_a_copy_button_and_read_without_script(browser, site):
    context, page, errors = open_page(browser, site, "integration-powershell", 390, "light")
    try:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site[0])
        blocks = page.locator("section.check .fix .cmd")
        commands = blocks.locator("code").all_inner_texts()
        assert "Set-CASMailbox -Identity dms-web@contoso-demo.onmicrosoft.com -SmtpClientAuthenticationDisabled " \
               "$false" in commands, commands
        # the first step is at the top too, with its commands
        assert page.locator("section.action .first-step .cmd code").first.inner_text() == "Connect-ExchangeOnline"
        target = blocks.filter(has_text="Set-CASMailbox").first
        button = target.locator("button.copy")
        assert button.get_attribute("aria-describedby") == target.locator("code").get_attribute("id")
        button.click()
        # a locator wait, not wait_for_function: its polling evaluates a string, which the page's CSP refuses
        page.locator(".cmd button.copy", has_text="Copied").first.wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == target.locator("code").inner_text()
        assert errors == [], errors
    finally:
        context.close()
    context, page, _ = open_page(browser, site, "integration-powershell", 390, "light", java_script_enabled=False)
    try:
        assert page.locator(".cmd button.copy").count() == 0
        code = page.locator("section.check .fix .cmd code").first
        assert code.evaluate("e => getComputedStyle(e).userSelect") == "all"  # one click selects the command
        assert overflow(page)[0] == 390
    finally:
        context.close()


def test_commands_are_found_in_fix_steps():
    step = ("Exchange Online PowerShell (Connect-ExchangeOnline as an Exchange admin): Get-CASMailbox -Identity "
            "a@b.com | Format-List PopEnabled; if False: Set-CASMailbox -Identity a@b.com -PopEnabled $true.")
    assert views.commands(step) == ["Connect-ExchangeOnline",
                                    "Get-CASMailbox -Identity a@b.com | Format-List PopEnabled",
                                    "Set-CASMailbox -Identity a@b.com -PopEnabled $true"]
    assert views.commands("Run `mailwarden reauth x` (or open the link). The log's `check deferred` lines.") == [
        "mailwarden reauth x"]
    assert views.commands("Test-ApplicationAccessPolicy -Identity a@b.com -AppId <application (client) ID> shows the "
                          "verdict; Get-ApplicationAccessPolicy | Where-Object AppId -eq 1f2e shows the group.") == [
        "Test-ApplicationAccessPolicy -Identity a@b.com -AppId <application (client) ID>",
        "Get-ApplicationAccessPolicy | Where-Object AppId -eq 1f2e"]
    # a cmdlet only named in a sentence is not a command
    assert views.commands("with New-ServicePrincipal and Add-MailboxPermission.") == []


# -- what the pages say first ----------------------------------------------------------------------------------
def test_overview_rows_name_the_diagnosis_not_the_whole_first_step(world, admin_hash):
    env = world
    with TestClient(demo_app(env, admin_hash), base_url="http://127.0.0.1:8080") as client:
        assert login(client).status_code == 303
        html = client.get("/").text
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr class="row[^>]*data-integration="([^"]+)".*?</tr>',
                                                        html, re.S)}
    failing = [v for v in views.integrations(env.runtime.config, env.runtime.store, datetime.now(UTC)) if v.fix_first]
    assert failing
    for v in failing:
        row = rows[v.name]
        assert views.diagnosis(v.headline.code) in row
        assert str(escape(v.fix_first)) not in row, v.name


def test_a_failing_delegated_integration_opens_with_the_reauthorise_button(site, browser):
    context, page, _ = open_page(browser, site, "integration", 390, "light")
    try:
        button = page.locator("section.action a.button#reauth-link")
        assert button.is_visible() and "/reauth/" in (button.get_attribute("href") or "")
        assert "Refresh token revoked" in page.locator("section.action h2").inner_text()
        # the action comes first: above the availability bars and the checks, within the first screen
        top = button.bounding_box()
        assert top is not None and top["y"] + top["height"] < 900
        assert top["y"] < page.locator("section.availability").bounding_box()["y"]
        # keyboard: the skip link first, then the page's controls, the button within a few Tab presses
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        for _ in range(5):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "reauth-link":
                break
        assert page.evaluate("document.activeElement.id") == "reauth-link"
    finally:
        context.close()


# -- error pages -----------------------------------------------------------------------------------------------
def test_error_pages_are_pages_of_the_app(world, admin_hash):
    env = world
    app = demo_app(env, admin_hash)
    with TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as c:
        assert login(c).status_code == 303
        r = c.get("/integrations/nosuch")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "<h1>" in r.text and "Not found" in r.text and "no integration named &#39;nosuch&#39;" in r.text
        assert 'href="/static/app.css"' in r.text and "Sign out" in r.text and csrf_of(r.text)
        assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
        assert c.get("/api/integrations/nosuch").json() == {"error": "no integration named 'nosuch'"}  # JSON stays
    with TestClient(app, base_url="http://127.0.0.1:8080") as anonymous:  # not signed in: no user, no sign-out
        r = anonymous.get("/static/nosuch.css")
        assert r.status_code == 404 and "<h1>" in r.text and "Sign out" not in r.text
    scope = {"type": "http", "path": "/x", "app": app, "headers": [], "state": {}}
    for code in (410, 500):
        page = pages.error_page(scope, code, "because")
        assert page.status_code == code and b"<h1>" in page.body and b"because" in page.body
    broken = pages.error_page({"type": "http", "path": "/x", "headers": []}, 500, "internal error")  # no app at hand
    assert broken.status_code == 500 and broken.body == b"500: internal error"

