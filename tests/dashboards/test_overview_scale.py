"""The overview at 1,000 integrations, the API's filters and a check's recent history (issue 19, items 2 and 4):

- /api/integrations takes the overview's search and filters (q, tenant, system, app, tag, status) and answers the
  same integrations as the overview's address with the same query, worst first; a value over 200 characters, a
  control character or an unknown status is a 400 saying which;
- the overview lists every integration that needs attention on every page and the ok and paused ones a page of
  ``pages.PAGE_ROWS`` at a time (``?page=N``, ``?page=all``, kept in the address; with a grouping, a group says
  how many of its rows are on other pages), so that 1,000 integrations stay under 500 KB of HTML (the figure is
  bench/overview.py's);
- an integration's page shows each of a check's stored runs as a beat from the first run on (a new install: no
  hourly rollup yet), and the latency of those runs as a chart with its axes and values.

On the small fleet of tests/dashboards/test_overview_search.py (its table) and on bench/overview.py's fleet at
250 integrations.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.web import pages
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from mailwarden.state import Thresholds

# fleet is a fixture (pytest finds it here once imported)
from tests.browser_fixtures import serving
from tests.dashboards.conftest import ARTIFACTS
from tests.dashboards.test_a11y import AXE, AXE_VERSION, _audit
from tests.dashboards.test_overview_search import FLEET, fleet, names  # noqa: F401


@pytest.fixture(scope="module")
def web(fleet):  # noqa: F811 - the fixture above
    cfg, store = fleet
    with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080",
                    raise_server_exceptions=False) as c:
        yield c


# -- the API's filters are the overview's ----------------------------------------------------------------------
QUERIES = [
    {}, {"q": "ALPHA.example"}, {"q": "CONSENT"}, {"q": "Charlie DMS"}, {"q": "bbbb2222"}, {"q": "robot@bravo"},
    {"tenant": "alpha"}, {"system": "Zendesk"}, {"app": "charlie-dms"}, {"tag": "crm"}, {"status": "problem"},
    {"status": "fail"}, {"status": "ok"}, {"q": "example.com", "status": "problem", "tenant": "charlie"},
    {"system": "Salesforce", "status": "warn"}, {"q": "nothing matches this"}, {"tenant": "nosuch"},
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()) or "all")
def test_api_integrations_answers_the_overviews_rows_for_the_same_query(web, query):
    page = web.get("/", params=query)
    api = web.get("/api/integrations", params=query)
    assert page.status_code == api.status_code == 200
    assert [i["name"] for i in api.json()] == names(page.text)
    if query and "nosuch" not in str(query) and "nothing" not in str(query):  # a filter that narrows, not to nothing
        assert 0 < len(api.json()) < len(FLEET)


@pytest.mark.parametrize(("query", "says"), [
    ({"q": "x" * 201}, "the search (q) is 201 characters long; at most 200 are taken"),
    ({"system": "s" * 201}, "system is 201 characters long; at most 200 are taken"),
    ({"q": "a\x1bb"}, "the search (q) holds a control character (U+001B)"),
    ({"tenant": "al\u202epha"}, "tenant holds a control character (U+202E)"),
    ({"status": "broken"}, "status 'broken' is not known and is refused: one of problem, fail"),
])
def test_api_integrations_refuses_bad_input_with_a_400_saying_why(web, query, says):
    r = web.get("/api/integrations", params=query)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert says in r.json()["error"], r.json()
    assert web.get("/", params=query).status_code == (200 if "status" in query else 400)  # the overview: the same


def test_the_openapi_document_names_the_filters_and_the_400():
    from mailwarden.monitor.web.api import openapi

    op = openapi()["paths"]["/api/integrations"]["get"]
    assert [p["name"] for p in op["parameters"]] == ["q", "tenant", "system", "app", "tag", "status"]
    assert "400" in op["responses"]


# -- the overview a page at a time -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_app(tmp_path_factory):
    """bench/overview.py's fleet at 250 integrations in 10 tenants (about 12 % not ok): its app."""
    from bench import overview as bench

    where = tmp_path_factory.mktemp("big")
    cfg = bench.write_config(250, 10, where)
    cfg = cfg.model_copy(update={"database": f"sqlite:///{where / 'overview.db'}"})
    store, _ = bench.build_store(cfg, datetime.now(UTC))
    try:
        yield create_app(cfg, store, access=Access(mode="none"))
    finally:
        store.close()


@pytest.fixture(scope="module")
def big(big_app):
    with TestClient(big_app, base_url="http://127.0.0.1:8080") as c:
        yield c


def rows(html: str) -> list[tuple[str, str]]:
    """(name, status) of each row; the status "stale" for a stale one (an ok row that is stale needs attention)."""
    return [(name, "stale" if "s-stale" in row else status) for name, status, row in re.findall(
        r'<tr class="row[^>]*data-integration="([^"]+)" data-status="([^"]+)">(.*?)</tr>', html, re.S)]


def test_the_overview_lists_every_problem_and_the_ok_rows_a_page_at_a_time(big):
    everything = rows(big.get("/?page=all").text)
    assert len(everything) == 250
    quiet = [n for n, s in everything if s in ("ok", "paused")]
    problems = [n for n, s in everything if s not in ("ok", "paused")]
    assert problems and len(quiet) > 2 * pages.PAGE_ROWS and any(s == "stale" for _, s in everything)
    seen: list[str] = []
    last = -(-len(quiet) // pages.PAGE_ROWS)
    for n in range(1, last + 1):
        html = big.get(f"/?page={n}").text if n > 1 else big.get("/").text
        listed = [name for name, _ in rows(html)]
        on_page = [name for name in listed if name in quiet]
        # every integration that needs attention on every page, worst first as ever; the quiet ones in turn
        assert [name for name in listed if name not in quiet] == [p for p in problems if p not in quiet]
        assert listed == [name for name, _ in everything if name in set(listed)]
        assert len(on_page) == (pages.PAGE_ROWS if n < last else len(quiet) - pages.PAGE_ROWS * (last - 1))
        seen += on_page
        assert f"(page {n} of {last})" in html
        assert ('rel="next"' in html) == (n < last) and ('rel="prev"' in html) == (n > 1)
        assert 'href="/?page=all"' in html
    assert seen == quiet  # each quiet row on exactly one page
    whole = big.get("/?page=all").text
    assert f"All {len(quiet)} ok and paused integrations are listed." in whole and 'href="/"' in whole
    # past the last page: the last, said so; a page that is no number: a 400
    r = big.get("/?page=99")
    assert r.status_code == 200 and f"page 99 is past the last ({last}): the last is shown" in r.text
    assert big.get("/?page=0").status_code == 400 and big.get("/?page=x").status_code == 400
    # the filters keep the page's address; a filter's link starts at its first page
    html = big.get("/?status=ok&page=2").text
    assert 'href="/?status=ok&amp;page=1" rel="prev"' in html and 'href="/?status=ok&amp;page=3" rel="next"' in html
    assert 'href="/?status=ok&amp;page=all"' in html


def test_a_grouped_overview_says_how_many_rows_of_a_group_are_on_other_pages(big):
    html = big.get("/?group=status").text
    heading = re.compile(r"<h3[^>]*>(<a [^>]*>)?ok(</a>)?</h3>")
    body = next(b for b in re.findall(r"<tbody>(.*?)</tbody>", html, re.S) if heading.search(b))
    total = int(re.search(r"of (\d+)</span>", body).group(1))
    assert total > pages.PAGE_ROWS  # the counts are the group's, not the page's
    more = re.search(r'<tr class="more"><td colspan="7">(\d+) ok or paused integrations of this group are on other '
                     r'pages: <a href="([^"]+)">', body)
    assert more and len(rows(body)) + int(more.group(1)) == total
    assert len([n for n, s in rows(body) if s == "ok"]) == pages.PAGE_ROWS  # and its stale ones: always shown
    assert more.group(2) == "/?status=ok&amp;group=status&amp;page=all"
    assert len(rows(big.get("/?status=ok&group=status&page=all").text)) == total
    # a page's ok rows are the next ones in the table's order, group after group: the groups that show all of theirs
    # come first, then one cut short, then those whose ok rows are all on later pages
    bodies = [b for b in re.findall(r"<tbody>(.*?)</tbody>", big.get("/?group=tenant").text, re.S)
              if 'class="grouphead"' in b]
    cut = [('<tr class="more">' in b) for b in bodies]
    assert any(cut) and not all(cut) and cut == sorted(cut)
    shown_ok = [len([n for n, s in rows(b) if s in ("ok", "paused")]) for b in bodies]  # stale ones: always shown
    assert sum(shown_ok) == pages.PAGE_ROWS and all(n == 0 for n, c in zip(shown_ok[1:], cut[:-1], strict=True) if c)


# -- beats and latency from the first run ----------------------------------------------------------------------
def test_each_stored_run_is_a_beat_and_its_latency_is_charted_with_axes(web, fleet):  # noqa: F811
    cfg, store = fleet
    now = datetime.now(UTC)
    name = "al-leads"
    # three more runs of its token check in the last minutes, one failing: a new install, no hour rolled up yet
    for minutes, status, code, ms in ((4, Status.OK, None, 120.0), (3, Status.FAIL, "consent_missing", 900.0),
                                      (2, Status.OK, None, 95.0)):
        store.checks.record_result(integration=name, check="token",
                                   checked_at=now - timedelta(minutes=minutes, seconds=30),
                                   outcome=Outcome(status, code, f"token {status.value}", latency_ms=ms),
                                   thresholds=Thresholds(3, 1))
    html = web.get(f"/integrations/{name}").text
    section = re.search(r'<section class="check[^"]*" id="check-token">(.*?)</section>', html, re.S).group(1)
    beats = re.search(r'<svg class="bars beats"[^>]*aria-label="([^"]+)">(.*?)</svg>', section, re.S)
    assert beats, section[:500]
    stored = store.checks.results(name, "token", None, 100)
    assert beats.group(1) == f"last {len(stored)} runs: {len(stored) - 1} ok or warn"
    tips = re.findall(r"<title>([^<]+)</title>", beats.group(2))
    assert len(tips) == len(stored) == 4  # the fixture's run and these three: each a beat, the newest last
    assert tips[1].endswith("UTC: fail (consent_missing), 900 ms")
    assert [t[:19] for t in tips] == [r.checked_at.strftime("%Y-%m-%d %H:%M:%S") for r in reversed(stored)]
    assert "last 4: 3 ok or warn, the oldest" in section
    # and the rollups at their resolutions: hours (24 h), 6 hours (7 d), days (30 d and 90 d)
    assert re.findall(r'<span class="wname">([^<]+)</span>', section) == ["runs", "24 h", "7 d", "30 d", "90 d"]
    # latency: a chart with both axes' labels and each value in a tooltip, the figures beside it
    chart = re.search(r'<svg class="latency"[^>]*>(.*?)</svg>', section, re.S).group(1)
    labels = re.findall(r'<text class="([yx]label[^"]*)"[^>]*>([^<]+)</text>', chart)
    assert ("ylabel", "1000 ms") in labels and ("ylabel", "0") in labels
    assert [text for cls, text in labels if cls.startswith("xlabel")] == [
        stored[-1].checked_at.strftime("%H:%M"), stored[0].checked_at.strftime("%H:%M")]
    assert re.findall(r"UTC: (\d+) ms</title>", chart) == ["120", "900", "95", "50"]  # the fixture's run: newest
    assert "latency of the last runs: latest 50 ms · median 108 ms · max 900 ms" in section


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [390, 1400])
def test_the_paged_overview_reflows_and_is_accessible(browser, big_app, width, scheme):
    shots = ARTIFACTS / "screenshots"
    with serving(big_app) as url:
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        try:
            page.add_init_script(path=str(AXE))
            page.goto(url + "/?group=tenant")
            assert page.evaluate("axe.version") == AXE_VERSION
            assert page.locator("tr.more a").count() > 0
            page.goto(url + "/")
            pager = page.locator("nav.pager")
            assert pager.is_visible() and "page 1 of " in pager.inner_text()
            assert page.evaluate("[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]") == [
                width, width]
            assert _audit(page) == []
            with page.expect_navigation():
                pager.get_by_role("link", name="next page").click()
            assert page.url.endswith("/?page=2") and "page 2 of " in page.locator("nav.pager").inner_text()
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"overview-paged-{width}-{scheme}.png"), full_page=True)
        finally:
            context.close()


def test_the_canarys_delivery_delay_is_charted_in_seconds(web, fleet):  # noqa: F811
    """A reading check with `canary` stores each found canary's delay (canary_delay_s): its integration page charts
    them, in seconds, with the figures beside the chart (issue 16: the end-to-end delay stored and charted)."""
    cfg, store = fleet
    now = datetime.now(UTC)
    name = "al-leads"
    for minutes, delay in ((6, 4.0), (4, 95.5), (2, 12.0)):
        store.checks.record_result(integration=name, check="token", checked_at=now - timedelta(minutes=minutes),
                                   outcome=Outcome(Status.OK, None, "canary found", latency_ms=80.0,
                                                   metrics={"canary_delay_s": delay, "canary_state": "delivered"}),
                                   thresholds=Thresholds(3, 1))
    html = web.get(f"/integrations/{name}").text
    section = re.search(r'<section class="check[^"]*" id="check-token">(.*?)</section>', html, re.S).group(1)
    [chart] = [c for c in re.findall(r'<svg class="latency"[^>]*aria-label="([^"]+)"', section)
               if c.startswith("canary delivery delay")]
    assert chart == "canary delivery delay, the last 3 found by token: latest 12 s · median 12 s · max 96 s"
    assert "canary delivery delay (sent to received): latest 12 s · median 12 s · max 96 s" in section
    assert re.findall(r"UTC: (\d+) s</title>", section) == ["4", "96", "12"]
