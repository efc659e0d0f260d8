"""PostgreSQL stopped mid-run (a throwaway cluster made with initdb, never the shared server): checks go on,
results wait in memory, one "storage unavailable" warning, and when the database returns every result is
written in order with the transitions it would have made anyway; notices only after that; no crash."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from tests.ha.conftest import write_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
NAMES = ["i0", "i1", "i2"]
OUTAGE_S = 60.0  # issue 9: a one-minute outage


def finished(proc, name: str | None = None) -> list[dict]:
    return [ln for ln in proc.msgs("check finished") if name is None or ln["integration"] == name]


def test_database_stopped_mid_run_nothing_lost(tmp_path, cluster, receiver, serve):
    # failure_threshold 3: the new -> error transition of each check comes from its third result, taken
    # while the database is down
    cfg = write_config(tmp_path / "mailwarden.yaml", cluster.url, NAMES, alerts_url=receiver.url,
                       interval="3s", failure_threshold=3)
    proc = serve(cfg, "serve")
    proc.wait_for(lambda _: all(len(finished(proc, n)) >= 1 for n in NAMES), "a first result of each check")

    cluster.stop()
    stopped_at = time.time()
    runs_at_stop = {n: len(finished(proc, n)) for n in NAMES}
    time.sleep(OUTAGE_S)
    assert proc.proc.poll() is None
    during = {n: len(finished(proc, n)) - runs_at_stop[n] for n in NAMES}
    assert all(c >= OUTAGE_S / 3 - 3 for c in during.values()), during  # checks went on
    cluster.start()
    started_at = time.time()

    back = proc.wait_for(lambda _: proc.msgs("storage available again"), "the flush", timeout=30)
    n = {name: len(finished(proc, name)) for name in NAMES}
    proc.wait_for(lambda _: all(len(finished(proc, k)) >= n[k] + 2 for k in NAMES), "results after the return")
    proc.wait_for(lambda _: len(receiver.bodies) >= 1, "a notice", timeout=30)
    assert proc.stop() == 0

    lines = proc.lines()
    warnings = [ln for ln in lines if ln["msg"] == "storage unavailable"]
    assert len(warnings) == 1, warnings
    assert back[0]["written"] >= sum(during.values()) and back[0]["dropped"] == 0, back[0]
    assert not [ln for ln in lines if ln["level"] in ("error", "critical") or "exc" in ln], \
        [ln for ln in lines if ln["level"] in ("error", "critical") or "exc" in ln]
    assert "Traceback" not in proc.log.read_text()

    conninfo = cluster.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as db:
        for name in NAMES:
            rows = db.execute("SELECT id, checked_at, status FROM check_results WHERE integration = %s "
                              "ORDER BY id", (name,)).fetchall()
            # nothing lost: one stored result per run, stored in the order taken
            assert len(rows) == len(finished(proc, name)), (name, len(rows), len(finished(proc, name)))
            assert [r[1] for r in rows] == sorted(r[1] for r in rows)
            assert {r[2] for r in rows} == {"error"}
            # the transition is the one an uninterrupted run makes: at the third result
            trans = db.execute("SELECT from_status, to_status, result_id, at FROM transitions "
                               "WHERE integration = %s ORDER BY id", (name,)).fetchall()
            assert [(t[0], t[1]) for t in trans] == [("new", "error")], (name, trans)
            assert trans[0][2] == rows[2][0] and trans[0][3] == rows[2][1]
            assert rows[2][1].timestamp() > stopped_at  # taken during the outage
            state = db.execute("SELECT status, failures, last_result_id FROM check_states WHERE integration = %s",
                               (name,)).fetchone()
            assert state == ("error", len(rows), rows[-1][0])
        unprocessed = db.execute("SELECT count(*) FROM transitions WHERE processed_at IS NULL").fetchone()[0]
        assert unprocessed == 0
    # notices only once the results were written, each once
    assert all(b["_at"] > started_at for b in receiver.bodies)
    assert not [k for k, c in Counter(receiver.keys()).items() if c > 1]
