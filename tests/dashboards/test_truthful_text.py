"""What people read is true and said one way: the report's stylesheet intact, its times absolute (it is read later
than it is written), diagnoses by title with the code beside them, day counts in ``checks.days``' words, one status
vocabulary (the README's) on the overview, the integration page and the report."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from mailwarden import days
from mailwarden.monitor.web import views
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from mailwarden.monitor.web.report import render_report
from tests.dashboards.conftest import small_store
from tests.dashboards.test_report_history import summary_rows

VOCABULARY = {"ok", "warn", "fail", "error", "blocked", "paused", "stale", "pending"}


def test_report_inlines_its_stylesheet_as_written(demo):
    env, _ = demo
    html = render_report(env.runtime.config, env.runtime.store)
    style = html[html.index("<style>") + 7:html.index("</style>")]
    assert '"Segoe UI"' in style and "&#34;" not in style and "&gt;" not in style  # was &#34;Segoe UI&#34;
    assert "font: 15px/1.45 system-ui" in style


def test_report_times_are_absolute_utc(demo):
    env, _ = demo
    cfg, store = env.runtime.config, env.runtime.store
    now = datetime.now(UTC)
    html = render_report(cfg, store, now)
    times = re.findall(r"<time [^>]*>([^<]*)</time>", html)
    assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", t) for t in times), set(times)
    # (day counts stay counts, "10 days left", as of the report's time in its header)
    assert not re.search(r"(ago|>in \d+ (s|min|h|days))</time>", html)
    since = next(s.since for s in store.checks.states("enaio-notify") if s.check == "token")
    assert f"{since:%Y-%m-%d %H:%M} UTC" in summary_rows(html)["enaio-notify"]


def test_the_live_dashboard_keeps_relative_times_with_the_absolute_one_on_hover(client):
    html = client.get("/integrations/enaio-notify").text
    m = re.search(r'<time datetime="[^"]+" title="(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)">([^<]+)</time>', html)
    assert m and m.group(2).endswith("ago")


def test_report_rows_name_the_diagnosis_with_its_code(demo):
    env, _ = demo
    rows = summary_rows(render_report(env.runtime.config, env.runtime.store))
    assert "Client secret expired (<code>secret_expired</code>)" in rows["enaio-notify"]
    assert "Mailbox not found (<code>mailbox_not_found</code>)" in rows["agiloft-contracts"]
    assert "Refresh token revoked (<code>refresh_token_revoked</code>)" in rows["oracle-b2c-support"]


def _credentials(store, now: datetime) -> None:
    def secret(key_id: str, name: str, ends: datetime) -> dict:
        return {"kind": "client_secret", "key_id": key_id, "hint": "abc", "display_name": name,
                "start_at": now - timedelta(days=300), "expires_at": ends}

    store.inventory.upsert_credentials(tenant="contoso", app="hoth-email-integration", client_id="cid-hoth",
                                       source="graph", now=now,
                                       creds=[secret("k1", "almost ten", now + timedelta(days=9.9)),
                                              secret("k2", "this morning", now - timedelta(hours=12)),
                                              secret("k3", "days ago", now - timedelta(days=2.5))])


def test_day_counts_are_checks_days_on_every_surface(demo, tmp_path):
    env, _ = demo
    cfg = env.runtime.config
    now = datetime.now(UTC)
    store = small_store(tmp_path / "d.db", cfg, now)
    _credentials(store, now)
    expected = {"almost ten": (9, "9 days left"), "this morning": (0, "expired today"),
                "days ago": (-2, "expired 2 days ago")}  # were "9 d left", "expired 1 d ago", "expired 3 d ago"
    assert {n: days.expiry_words(now + timedelta(days=d), now) for n, d in
            (("almost ten", 9.9), ("this morning", -0.5), ("days ago", -2.5))} == {n: w for n, (_, w) in
                                                                                  expected.items()}
    try:
        with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
            overview = c.get("/").text
            api = {x["display_name"]: x for x in c.get("/api/credentials").json()}
        report = render_report(cfg, store, now)
        for name, (count, words) in expected.items():
            assert api[name]["days_left"] == count
            for html in (overview, report):
                table = html[html.index('<table class="creds">'):]
                assert re.search(rf"\({words}\)</td><td>[^<]*</td><td>{name}</td>", table), (name, words)
                timeline = html[html.index('<svg class="timeline"'):]
                assert f">{words}</text>" in timeline[:timeline.index("</svg>")]
            assert " d left" not in html and " d ago" not in html
    finally:
        store.close()


def _people_words(html: str) -> set[str]:
    """The status words shown: chip texts, summary tiles, the status filter's options."""
    chips = re.findall(r'<span class="chip[^"]*"[^>]*>([^<]+)</span>', html)
    tiles = re.findall(r'<div class="tile s-[^"]*"[^>]*><span class="n">\d+</span> ([^<]+)</div>', html)
    options = []
    if '<select name="status">' in html:
        select = html[html.index('<select name="status">'):]
        options = re.findall(r"<option[^>]*>([^<]+)</option>", select[:select.index("</select>")])
    return {w.strip() for w in chips + tiles + options}


def test_one_status_vocabulary_on_the_overview_the_pages_and_the_report(client, demo):
    env, _ = demo
    check_names = {k for i in env.runtime.config.integrations for k in i.checks}
    overview = client.get("/").text
    words = _people_words(overview)
    # check chips carry the check's name; every other label is a status of the README (or "all", "not ok")
    assert words - check_names <= VOCABULARY | {"all", "not ok"}, words - check_names - VOCABULARY
    assert {"fail", "warn", "ok"} <= words
    pages = [client.get(f"/integrations/{i.name}").text for i in env.runtime.config.integrations]
    report = render_report(env.runtime.config, env.runtime.store)
    for html in [*pages, report]:
        assert _people_words(html) - check_names <= VOCABULARY, _people_words(html) - check_names - VOCABULARY
    for html in [overview, report]:
        for old in ("failing", "no answer", "attention", "not run yet", "broken", "not checked", "problem"):
            assert f">{old}<" not in html and f"> {old}<" not in html, old
    # the filter values people bookmarked keep working, and "stale" is one too
    got = re.findall(r'data-integration="([^"]+)" data-status="([^"]+)"', client.get("/?status=problem").text)
    assert got and {s for _, s in got} <= {"fail", "error", "blocked", "warn", "pending"}
    assert client.get("/?status=stale").status_code == 200
    assert client.get("/api/integrations?status=stale").status_code == 200


def test_stale_filter_selects_the_stale(demo, tmp_path):
    env, _ = demo
    cfg = env.runtime.config
    now = datetime.now(UTC)
    store = small_store(tmp_path / "s.db", cfg, now, stale=("hoth-support",))
    try:
        with TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080") as c:
            html = c.get("/?status=stale").text
            assert re.findall(r'data-integration="([^"]+)"', html) == ["hoth-support"]
            assert [i["name"] for i in c.get("/api/integrations?status=stale").json()] == ["hoth-support"]
            assert '<span class="n">1</span> stale' in c.get("/").text
        assert views.LABEL["new"] == "pending"
    finally:
        store.close()
