"""WCAG 2.1 AA on every page (issue 19): axe-core, from a pinned copy in this repository, finds no violation on any
page of tests/dashboards/test_a11y_reflow.py's list (overview, integration pages, /incidents, /secrets, login, the 404
page, the report), at 390 and 1400 px, light and dark; every page has one main landmark and an <h1>, and starts
with a skip link.

axe-core is run with all its rules but the experimental ones (the WCAG 2.0/2.1 A and AA rules and the best
practices). The copy is ``tests/dashboards/vendor/axe.min.js``: axe-core 4.14.1 from the npm registry
(``npm pack axe-core@4.14.1``, tarball sha1 14d8a6f3f085afd126b8b5ca1e42e50e17fb1d99; Mozilla Public License 2.0,
``vendor/axe-core.LICENSE``). Its SHA-256 is checked below, so a changed file fails instead of testing with
something else. It is injected as an init script (through the DevTools protocol), so the pages' strict
Content-Security-Policy stays as it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

# browser, site and world are fixtures (pytest finds them here once imported)
from tests.dashboards.test_a11y_reflow import PAGES, SCHEMES, WIDTHS, open_page, site, world  # noqa: F401

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
AXE_VERSION = "4.14.1"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"


def test_the_pinned_axe_core_is_the_one_named():
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256
    assert data.startswith(f"/*! axe v{AXE_VERSION}".encode())


def _audit(page) -> list[dict]:
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 4).map(n => ({target: n.target.join(' '), summary: n.failureSummary}))}));
    }""")
    return result


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(PAGES))
def test_axe_core_finds_no_violation(browser, site, name, width, scheme):  # noqa: F811 - the fixtures above
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    context, page, _ = open_page(browser, site, name, width, scheme)
    try:
        page.add_init_script(path=str(AXE))
        page.reload()  # the init script runs on this load, before the page's own scripts
        page.wait_for_load_state("load")
        assert page.evaluate("typeof axe !== 'undefined' && axe.version") == AXE_VERSION
        violations = _audit(page)
        assert violations == [], json.dumps(violations, indent=1)
        # the structure axe's best practices look at, said once more
        assert page.locator("main").count() == 1 and page.locator("h1").count() >= 1
        first = page.locator("body a").first
        assert first.get_attribute("class") == "skip" and first.get_attribute("href") == "#main"
    finally:
        context.close()


FOCUSED = """() => {
    const e = document.activeElement, s = getComputedStyle(e);
    return [e.tagName + (e.id ? '#' + e.id : '') + ':' + (e.textContent || '').trim().slice(0, 30),
            s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2, e.getBoundingClientRect().width > 0];
}"""


def test_every_control_is_reachable_by_keyboard_and_shows_its_focus(browser, site):  # noqa: F811
    context, page, _ = open_page(browser, site, "overview", 390, "light")
    try:
        seen, outlines = [], set()
        for _ in range(200):
            page.keyboard.press("Tab")
            info = page.evaluate(FOCUSED)
            if seen and info[0] == seen[0]:
                break
            if info[0].startswith("BODY"):  # past the last control: the browser's own UI, then the top again
                continue
            seen.append(info[0])
            outlines.add((info[0], info[1] and info[2]))
        names = " | ".join(seen)
        for wanted in ("Skip to the content", "overview", "incidents", "secrets", "#theme-toggle", "#pause-updates",
                       "Sign out", "SELECT", "agiloft-contracts", "Acknowledge", "Snooze"):
            assert wanted in names, (wanted, names)
        assert [n for n, visible in outlines if not visible] == []  # a visible focus ring on each
    finally:
        context.close()
