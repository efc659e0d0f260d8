"""`mailwarden report` (one self-contained file), `web hash-password`, and the bounded history."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.db import open_store
from mailwarden.monitor.models import CheckResult
from mailwarden.monitor.web.auth import verify_password
from mailwarden.monitor.web.report import render_report
from mailwarden.state import Thresholds
from tests.dashboards.conftest import small_store
from tests.dashboards.test_web import BROKEN

MAILWARDEN = [sys.executable, "-m", "mailwarden.monitor"]


def summary_rows(html: str) -> dict[str, str]:
    """The report's summary table: integration name -> the row's HTML."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<tr class="row[^>]*data-integration="([^"]+)".*?</tr>',
                                                         html, re.S)}


def detailed(html: str) -> set[str]:
    return set(re.findall(r'<article class="integration" id="i-([^"]+)"', html))


def test_report_has_a_row_for_every_integration_and_full_pages_only_for_those_not_ok(demo):
    env, _ = demo
    cfg = env.runtime.config
    html = render_report(cfg, env.runtime.store)
    rows = summary_rows(html)
    assert sorted(rows) == sorted(i.name for i in cfg.integrations)
    # full pages (diagnosis, fix steps, uptime bars, transitions) for the failing and the warning ones only
    assert detailed(html) == BROKEN | {"agiloft-inbound", "sinch-billing"}
    page = html[html.index('id="i-enaio-notify"'):]
    page = page[:page.index("</article>")]
    assert "What to do" in page and "secret_expired" in page and "Transitions" in page
    assert 'aria-label="availability 30 d"' in page and 'aria-label="runs 30 d"' in page
    for name in ("hoth-support", "sinch-queue"):  # ok: the row only, and the row is what links point at
        assert f'id="i-{name}"' in rows[name]
    # a row: tenant, worst status, a chip per check, since, last success, 24 h uptime figure
    row = rows["enaio-notify"]
    assert "<td>contoso</td>" in row and 'class="chip s-fail"' in row and "secret_expired" in row
    checks = cfg.integration("enaio-notify").checks
    # the checks' cell: the status cell may carry a "stale" chip too, once the demo's results are two intervals old
    cell = re.search(r'<td class="checks">(.*?)</td>', row, re.S).group(1)
    assert len(re.findall(r'class="chip small s-', cell)) == len(checks)
    assert "<time " in row and re.search(r"<td>[\d.]+%</td>", row)
    # every link in the file resolves inside it; incidents and expiring credentials are there
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert all(target in ids for target in re.findall(r'href="#([^"]+)"', html))
    assert "Open incidents" in html and "#1 " in html and "enaio 2024" in html
    assert "Re-run now" not in html and "<form" not in html


def test_report_details_an_ok_integration_whose_checks_stopped(demo, tmp_path):
    env, _ = demo
    cfg = env.runtime.config
    now = datetime.now(UTC)
    store = small_store(tmp_path / "r.db", cfg, now, stale=("hoth-support",), failing=("sinch-sales",))
    try:
        html = render_report(cfg, store, now)
        assert detailed(html) == {"hoth-support", "sinch-sales"}
        rows = summary_rows(html)
        assert "s-stale" in rows["hoth-support"] and "s-stale" not in rows["sinch-queue"]
        assert "consent_missing" in rows["sinch-sales"]
        assert "The monitor has stalled" not in html
        # a day later the whole monitor has stalled: the banner says so, every row is stale, and the full
        # pages are for the statuses only (not 11 pages that all say the same)
        later = render_report(cfg, store, now + timedelta(days=1))
        assert "The monitor has stalled" in later
        newest = f"{now - timedelta(minutes=1):%Y-%m-%d %H:%M} UTC"  # absolute: the file is read later
        assert re.search(rf"The newest result was taken <time [^>]*>{newest}</time>", later)
        assert all("s-stale" in r for r in summary_rows(later).values())
        assert detailed(later) == {"sinch-sales"}
    finally:
        store.close()


def test_report_of_an_all_ok_fleet_has_rows_and_no_pages(demo, tmp_path):
    env, _ = demo
    cfg = env.runtime.config
    now = datetime.now(UTC)
    store = small_store(tmp_path / "ok.db", cfg, now)
    try:
        html = render_report(cfg, store, now)
        assert len(summary_rows(html)) == len(cfg.integrations) and detailed(html) == set()
        assert "None: every integration is ok" in html and "What to do" not in html
    finally:
        store.close()


def test_report_is_one_self_contained_file(demo, tmp_path):
    env, _ = demo
    out = tmp_path / "status.html"
    proc = subprocess.run([*MAILWARDEN, "report", "-c", str(env.config_path), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert "<style>" in html and "<svg" in html and "<script" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "an external reference"
    assert not re.search(r"""<link[^>]+stylesheet""", html)
    for name in ("enaio-notify", "sinch-queue", "What to do", "secret_expired"):
        assert name in html
    assert 'id="i-enaio-notify"' in html and 'href="#i-enaio-notify"' in html
    assert "Acknowledge" not in html and "csrf_token" not in html  # no actions in a file


def test_hash_password_prints_a_hash_the_app_accepts():
    proc = subprocess.run([*MAILWARDEN, "web", "hash-password", "--stdin"], input="a long passphrase\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert verify_password("a long passphrase", proc.stdout.strip())
    short = subprocess.run([*MAILWARDEN, "web", "hash-password", "--stdin"], input="short\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 1 and "8 characters" in short.stderr


def test_rollups_then_pruning_keep_history_bounded(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/h.db")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    th = Thresholds(1, 1)
    for i in range(60):  # 60 results, one a minute: 10 fail, then ok
        status = Status.FAIL if 5 <= i < 15 else Status.OK
        store.checks.record_result(integration="a", check="token",
                                   outcome=Outcome(status, None if status == Status.OK else "secret_expired", "x",
                                                   latency_ms=100.0 + i),
                                   checked_at=t0 + timedelta(minutes=i), thresholds=th)
    now = t0 + timedelta(hours=3)
    assert store.history.rollup_history(now) == 1
    (r,) = store.history.rollups("a")
    assert (r.hour, r.total, r.ok, r.fail, r.latency_count) == (t0, 60, 50, 10, 60)
    assert r.latency_max_ms == 159.0
    assert store.history.rollup_history(now) == 0  # idempotent: the hour is behind the watermark
    removed = store.history.prune_history(now, raw_per_check=20, failures_days=30, rollup_days=90)
    kept = store.checks.results("a", limit=1000)
    assert len(kept) == 30 and removed["results"] == 30  # newest 20 + the 10 failures kept longer
    assert sum(1 for k in kept if k.status == "fail") == 10
    # failures past failures_days go too; the rollup stays until rollup_days
    later = t0 + timedelta(days=40)
    store.history.prune_history(later, raw_per_check=20, failures_days=30, rollup_days=90)
    assert len(store.checks.results("a", limit=1000)) == 20 and store.count(CheckResult) == 20
    assert len(store.history.rollups("a")) == 1
    store.history.prune_history(t0 + timedelta(days=100), raw_per_check=20, failures_days=30, rollup_days=90)
    assert store.history.rollups("a") == []
    store.close()
