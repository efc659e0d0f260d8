"""Live updates without reloads (issue 19, item 6): every ``web.refresh`` seconds the page fetches itself and patches
what changed in place (dashboards/static/app.js), within the strict CSP. Playwright driving Debian's chromium against
the demo's app (tests/dashboards/test_a11y_reflow.py's harness, on a demo world of this module's own), with a status
changed straight in the store between two updates:

- a row whose status changes is patched (and moved to its place, worst first) without a reload, and a link of that
  row keeps the keyboard focus; a search being typed and not sent stays as typed; the scroll position stays;
- "Pause updates" stops them, and the choice outlives a reload (remembered in this browser, like the theme);
- a failed update is said in the header with the time of the last good one, and the next good one says so.

Skipped without chromium or playwright, except under MAILWARDEN_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from mailwarden.checks.base import Outcome, Status
from mailwarden.state import Thresholds
from tests.browser_fixtures import serving

# browser and world are fixtures (pytest finds them here once imported)
from tests.dashboards.test_a11y_reflow import demo_app, sign_in, world  # noqa: F401

REFRESH = 2.0  # seconds between two updates of the page


@pytest.fixture(scope="module")
def live(world, admin_hash, browser):  # noqa: F811 - the fixture above
    """The demo's app with web.refresh = 2 s, and a signed-in storage state."""
    env = world
    with serving(demo_app(env, admin_hash, refresh=REFRESH)) as url:
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, url)
        state = context.storage_state()
        context.close()
        yield url, state, env


def set_status(env, name: str, status: Status, code: str | None = None) -> None:
    """Every check of ``name`` answers ``status`` now (thresholds of one: the state follows at once)."""
    store = env.runtime.store
    integ = env.runtime.config.integration(name)
    for kind in integ.checks:
        store.checks.record_result(integration=name, check=kind, checked_at=datetime.now(UTC),
                                   outcome=Outcome(status, code, f"{kind} {status.value} (test)", latency_ms=40.0),
                                   thresholds=Thresholds(1, 1))


def row_status(page, name: str) -> str | None:
    return page.locator(f"tr.row[data-integration='{name}']").get_attribute("data-status")


@pytest.fixture
def tab(browser, live):
    url, state, env = live
    context = browser.new_context(viewport={"width": 390, "height": 800}, storage_state=state)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page, url, env, errors
    finally:
        context.close()


def an_ok_integration(page) -> str:
    names = page.locator("tr.row[data-status='ok']").evaluate_all("els => els.map(e => e.dataset.integration)")
    assert names, "the demo has no ok integration"
    return names[-1]  # the last row: it moves furthest when it fails


def test_a_changed_row_is_patched_in_place_and_its_focused_link_keeps_the_focus(tab):
    page, url, env, errors = tab
    page.goto(url + "/")
    name = an_ok_integration(page)
    page.evaluate("window.__notReloaded = true")
    page.fill("form.filters input[name=q]", "typed, not sent")
    link = page.locator(f"tr.row[data-integration='{name}'] td.name a")
    link.focus()
    # what is on the screen stays where it is: the row above it (the row itself moves up, out of sight)
    row = page.locator(f"tr.row[data-integration='{name}']")
    above = row.evaluate("e => e.previousElementSibling.dataset.integration")
    neighbour = page.locator(f"tr.row[data-integration='{above}']")
    top = neighbour.evaluate("e => e.getBoundingClientRect().top")
    try:
        set_status(env, name, Status.FAIL, "consent_missing")
        page.locator(f"tr.row[data-integration='{name}'][data-status='fail']").wait_for(timeout=15_000)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of patching the row"
        # the row moved up (worst first) and its link still has the focus, without a jump of what is on the screen
        names = page.locator("tr.row").evaluate_all("els => els.map(e => e.dataset.integration)")
        assert names.index(name) < names.index(above)
        assert page.evaluate("document.activeElement.getAttribute('href')") == f"/integrations/{name}"
        assert abs(neighbour.evaluate("e => e.getBoundingClientRect().top") - top) <= 2
        assert "consent missing (consent_missing)" in row.locator("td.what").inner_text()
        assert page.input_value("form.filters input[name=q]") == "typed, not sent"
        assert page.locator("#live-status").inner_text().startswith("updated ")
        # and back: patched again, the focus still there
        set_status(env, name, Status.OK)
        page.locator(f"tr.row[data-integration='{name}'][data-status='ok']").wait_for(timeout=15_000)
        assert page.evaluate("document.activeElement.getAttribute('href')") == f"/integrations/{name}"
        assert page.evaluate("window.__notReloaded === true")
        assert errors == [], errors
    finally:
        set_status(env, name, Status.OK)


def test_pause_stops_updates_and_is_remembered(tab):
    page, url, env, errors = tab
    page.goto(url + "/")
    name = an_ok_integration(page)
    pause = page.locator("#pause-updates")
    assert pause.is_visible() and pause.inner_text() == "Pause updates"
    pause.click()
    assert pause.inner_text() == "Resume updates"
    assert page.locator("#live-status").inner_text().startswith("paused")
    try:
        set_status(env, name, Status.FAIL, "consent_missing")
        page.wait_for_timeout(REFRESH * 1000 * 3)
        assert row_status(page, name) == "ok", "updated while paused"
        page.reload()  # remembered in this browser: still paused, and the reload itself shows the change
        assert page.locator("#pause-updates").inner_text() == "Resume updates"
        assert row_status(page, name) == "fail"
        set_status(env, name, Status.OK)
        page.wait_for_timeout(REFRESH * 1000 * 3)
        assert row_status(page, name) == "fail", "updated while paused"
        page.locator("#pause-updates").click()  # resumed: the update comes at once
        page.locator(f"tr.row[data-integration='{name}'][data-status='ok']").wait_for(timeout=10_000)
        assert page.evaluate("localStorage.getItem('mailwarden.paused')") is None
        assert errors == [], errors
    finally:
        set_status(env, name, Status.OK)
        page.evaluate("localStorage.removeItem('mailwarden.paused')")


def test_a_failed_update_is_said_with_the_time_of_the_last_good_one(tab):
    page, url, env, errors = tab
    page.goto(url + "/integrations/" + env.runtime.config.integrations[0].name)
    status = page.locator("#live-status")
    assert status.inner_text().startswith("updated ")
    page.route(page.url, lambda route: route.abort())  # the server does not answer
    page.locator("#live-status", has_text="did not answer").wait_for(timeout=10_000)
    said = status.inner_text()
    assert said.startswith("last updated ") and " UTC; the server did not answer at " in said, said
    assert "trying again every 2 s" in said
    page.unroute(page.url)
    page.route(page.url, lambda route: route.fulfill(status=503, body="busy"))
    page.locator("#live-status", has_text="the server answered 503").wait_for(timeout=10_000)
    page.unroute(page.url)
    # a locator wait, not wait_for_function: its polling evaluates a string, which the page's CSP refuses
    page.locator("#live-status", has_text=re.compile(r"^updated ")).wait_for(timeout=10_000)
    assert page.locator("h1").count() == 1  # the page is whole
