"""`python -m bench --scale` (issue 20 item 6) end to end on the smallest workload: a leader and one worker process on
a fresh PostgreSQL database, one cycle. What a user relies on: it runs, every check ran exactly once, and it prints
and writes the figures it promises (checks per second, per CPU-second, the enqueue cost, the speed reference)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.pg import admin_connect

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_scale_bench_runs_one_cycle_and_prints_its_figures(tmp_path):
    try:
        admin_connect()[0].close()
    except ConnectionError as exc:
        require_service("PostgreSQL", f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc})")
    out = tmp_path / "results-scale.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--scale", "20", "--cycles", "1", "--workers", "1",
                           "--enqueue-jobs", "200", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=55)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for figure in ("checks/s", "checks per CPU-second", "ms CPU per job in the leader", "peak lag",
                   "speed reference: TLS context", "duplicates: PASS, lost: PASS",
                   "scaling efficiency and throughput ratio: needs --workers 1,2"):
        assert figure in text, f"{figure!r} not printed:\n{text}"
    doc = json.loads(out.read_text())
    assert doc["complete"] is True
    cycle = doc["cycles_by_workers"]["1"][0]
    assert cycle["checks"] == doc["checks_per_cycle"] == 68  # 20 integrations, 3.4 checks each
    assert (cycle["duplicates"], cycle["lost"], cycle["statuses"]) == (0, 0, {"ok": 68})
    assert cycle["checks_per_s"] > 0 and cycle["checks_per_cpu_s"] > 0 and cycle["pg_cpu_s"] > 0
    assert doc["enqueue"]["added"] == 200 and doc["enqueue"]["cpu_ms_per_job"] > 0
