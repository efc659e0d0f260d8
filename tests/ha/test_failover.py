"""Two real `mailwarden serve` processes on one PostgreSQL database: exactly one leads (runs the checks and
sends the notifications), the other serves the dashboard; SIGKILL the leader mid-cycle and the other takes
over within 60 s, each check still running about once per interval, no notification lost or doubled.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from tests.ha.conftest import free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
NAMES = ["i0", "i1", "i2"]
INTERVAL = 3.0


def ts(line: dict) -> float:
    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


def finished(proc, name: str | None = None) -> list[dict]:
    return [ln for ln in proc.msgs("check finished") if name is None or ln["integration"] == name]


def healthz(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()


def test_leader_sigkill_takeover_without_double_runs_or_notifications(tmp_path, shared_pg_url, receiver, serve):
    ports = {"a": free_port(), "b": free_port()}
    procs = {n: serve(write_config(tmp_path / f"{n}.yaml", shared_pg_url, NAMES, web_port=ports[n],
                                   alerts_url=receiver.url, interval=f"{INTERVAL:g}s"), n) for n in "ab"}

    # exactly one leads
    def leaders(_lines=None):
        return [n for n, p in procs.items() if p.msgs("leadership acquired")]

    procs["a"].wait_for(lambda _: leaders(), "a leader", timeout=30)
    for n, p in procs.items():
        p.wait_for(lambda ls: any(ln["msg"] == "web app listening" for ln in ls), f"{n}'s web app")
    time.sleep(1)
    assert len(leaders()) == 1, leaders()
    lead, follow = leaders()[0], next(n for n in procs if n not in leaders())
    leader, follower = procs[lead], procs[follow]
    assert healthz(ports[lead]) == {"status": "ok", "leader": True, "buffered": 0}
    assert healthz(ports[follow]) == {"status": "ok", "leader": False, "buffered": 0}

    # the leader checks and notifies; the follower neither
    leader.wait_for(lambda _: all(len(finished(leader, n)) >= 4 for n in NAMES) and receiver.bodies,
                    "four runs of each check and a first notification", timeout=45)
    assert finished(follower) == []

    # SIGKILL right after a check finished: other checks of the cycle are due or running
    n = len(finished(leader))
    leader.wait_for(lambda _: len(finished(leader)) > n, "the next check")
    leader.kill()
    killed_at = time.time()
    notices_before = len(receiver.bodies)

    took = follower.wait_for(lambda _: follower.msgs("leadership acquired"), "the takeover", timeout=60)
    takeover_s = ts(took[0]) - killed_at
    print(f"\ntakeover after SIGKILL: {takeover_s:.2f} s")
    assert takeover_s < 60
    assert healthz(ports[follow])["leader"] is True

    # the new leader checks on, and notifications go on (reminders of the open incidents)
    follower.wait_for(lambda _: all(len(finished(follower, n)) >= 4 for n in NAMES)
                      and len(receiver.bodies) > notices_before, "runs and a notice after the takeover", timeout=45)
    settle = time.monotonic() + 20
    conninfo = shared_pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as db:
        while True:  # what is queued gets sent
            unsent = db.execute("SELECT count(*) FROM alert_deliveries WHERE state <> 'sent'").fetchone()[0]
            if unsent == 0 or time.monotonic() > settle:
                break
            time.sleep(0.5)
        assert follower.stop() == 0
        results = db.execute("SELECT integration, checked_at FROM check_results ORDER BY integration, checked_at")
        by_check: dict[str, list[float]] = {}
        for integ, at in results.fetchall():
            by_check.setdefault(integ, []).append(at.replace(tzinfo=at.tzinfo or UTC).timestamp())
        deliveries = db.execute("SELECT key, state FROM alert_deliveries").fetchall()
        sent_ok = db.execute("SELECT count(*) FROM notifications WHERE ok").fetchone()[0]
        unprocessed = db.execute("SELECT count(*) FROM transitions WHERE processed_at IS NULL").fetchone()[0]

    # results come from the leader only, then from the new leader only: every run is stored once
    assert all(ts(ln) > killed_at for ln in finished(follower))
    for name in NAMES:
        runs = len(finished(leader, name)) + len(finished(follower, name))
        stored = by_check[name]
        assert runs <= len(stored) <= runs + 1, (name, runs, len(stored))  # +1: killed between store and log
        gaps = [b - a for a, b in zip(stored, stored[1:], strict=False)]
        before = [g for b, g in zip(stored[1:], gaps, strict=False) if b < killed_at]  # both runs by the old leader
        # once per interval (jitter is 10 %), never twice: no run closer than half an interval to the last
        assert min(gaps) > INTERVAL * 0.5, (name, gaps)
        assert max(before) < INTERVAL * 1.5, (name, before)
        assert max(gaps) < 60, (name, gaps)

    # notifications: every queued notice sent exactly once, across the takeover
    keys = receiver.keys()
    doubled = [k for k, c in Counter(keys).items() if c > 1]
    assert not doubled, doubled
    assert {s for _, s in deliveries} == {"sent"}, deliveries
    assert set(keys) == {k for k, _ in deliveries}
    assert sent_ok == len(keys)
    assert unprocessed == 0
    assert any(b["_at"] > killed_at for b in receiver.bodies)
    for p in procs.values():
        assert "Traceback" not in p.log.read_text()
