"""`mailwarden report` (one self-contained file), `web hash-password`, and the bounded history."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from checks.base import Outcome, Status
from monitor.db import open_store
from monitor.models import CheckResult
from monitor.state import Thresholds
from monitor.web.auth import verify_password

MAILWARDEN = [sys.executable, "-m", "monitor"]


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
        store.record_result(integration="a", check="token", outcome=Outcome(status, None if status == Status.OK
                            else "secret_expired", "x", latency_ms=100.0 + i), checked_at=t0 + timedelta(minutes=i),
                            thresholds=th)
    now = t0 + timedelta(hours=3)
    assert store.rollup_history(now) == 1
    (r,) = store.rollups("a")
    assert (r.hour, r.total, r.ok, r.fail, r.latency_count) == (t0, 60, 50, 10, 60)
    assert r.latency_max_ms == 159.0
    assert store.rollup_history(now) == 0  # idempotent: the hour is behind the watermark
    removed = store.prune_history(now, raw_per_check=20, failures_days=30, rollup_days=90)
    kept = store.results("a", limit=1000)
    assert len(kept) == 30 and removed["results"] == 30  # newest 20 + the 10 failures kept longer
    assert sum(1 for k in kept if k.status == "fail") == 10
    # failures past failures_days go too; the rollup stays until rollup_days
    later = t0 + timedelta(days=40)
    store.prune_history(later, raw_per_check=20, failures_days=30, rollup_days=90)
    assert len(store.results("a", limit=1000)) == 20 and store.count(CheckResult) == 20
    assert len(store.rollups("a")) == 1
    store.prune_history(t0 + timedelta(days=100), raw_per_check=20, failures_days=30, rollup_days=90)
    assert store.rollups("a") == []
    store.close()
