"""Issue 18, item 12: a delivery claimed by a process that crashed mid-send. Real processes: one that claims and is
killed (SIGKILL), one that claims and stays alive; a claim of another host; a claim of a process whose pid this one
has now (a container restarted as pid 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.db import open_store
from mailwarden.monitor.runtime import integration_rows
from tests.alerts.conftest import load, record, write_config

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
CLAIMER = textwrap.dedent("""
    import os, signal, sys, time
    from datetime import datetime
    from mailwarden.alerts.dispatcher import Dispatcher
    from mailwarden.monitor.alerting import make_dispatcher
    from mailwarden.monitor.config import load
    from mailwarden.monitor.db import open_store

    cfg = load(sys.argv[1])
    store = open_store(cfg.database_url())
    d = make_dispatcher(cfg, store)  # what `mailwarden serve` builds; its worker id names the claims
    [claimed] = store.alerts.claim_deliveries(d.worker, datetime.fromisoformat(sys.argv[2]), limit=1)
    print(d.worker, claimed.route, flush=True)
    if sys.argv[3] == "crash":  # the send never finishes: killed before it records anything
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
""")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def claim_in_process(path, how: str, processes) -> tuple[subprocess.Popen, str, str]:
    p = subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), T0.isoformat(), how], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    processes.append(p)
    line = p.stdout.readline().split()
    assert len(line) == 2, p.stderr.read() if p.poll() is not None else "no claim reported"
    return p, line[0], line[1]


def test_claims_of_a_crashed_process_of_this_instance_are_released_at_start(tmp_path, receiver, processes):
    """Attacks the 5-minute wait after a crash: a single instance that was killed after claiming a delivery (before
    it could record the send) left the claim in place, and the next process of the same instance waited the whole
    lease before sending the notice. A process that starts must release at once the claims of its instance's
    processes that are gone (the killed one; one whose pid this process has now, as after a container restart), and
    only those: a live process of this host and another host keep their claims until the lease ends."""
    path = write_config(tmp_path / "mailwarden.yaml",
                        routes=[{"name": f"r{i}", "url": f"{receiver.url}?r={i}"} for i in range(4)],
                        reminder_interval="24h")
    cfg = load(path)
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), T0)
    record(store, "a", "token", "fail", "consent_missing", at=T0)
    assert len(make_dispatcher(cfg, store).evaluate(T0)) == 4  # queued, not sent
    assert {d.state for d in store.alerts.deliveries()} == {"pending"}

    crashed, crashed_worker, crashed_route = claim_in_process(path, "crash", processes)
    assert crashed.wait(30) == -9  # SIGKILL
    alive, alive_worker, alive_route = claim_in_process(path, "stay", processes)
    [other] = store.alerts.claim_deliveries("elsewhere.example:4242:0a1b2c3d.e4f5a6", T0, limit=1)
    here = make_dispatcher(cfg, store).worker  # "<instance>:<this pid>:<this process>.<dispatcher>"
    reused = f"{here.rsplit(':', 1)[0]}:0ld0ld00.abcdef"  # an earlier process that had this pid
    [mine] = store.alerts.claim_deliveries(reused, T0, limit=1)
    claims = {d.route: d.claimed_by for d in store.alerts.deliveries()}
    assert claims == {crashed_route: crashed_worker, alive_route: alive_worker, other.route: other.claimed_by,
                      mine.route: reused}
    assert all(d.claimed_until == T0 + timedelta(minutes=5) for d in store.alerts.deliveries())

    # a process of this instance starts, a second after the crash: the gone processes' deliveries go out now
    report = make_dispatcher(cfg, store).run_once(T0 + timedelta(seconds=1))
    assert report.sent == 2, "claims of gone processes were not released at start"
    sent = {d.route for d in store.alerts.deliveries() if d.state == "sent"}
    assert sent == {crashed_route, mine.route}
    assert len(receiver.bodies) == 2
    # the live process's claim and the other host's stay theirs until their lease ends
    held = {d.route: d.claimed_by for d in store.alerts.deliveries() if d.state == "pending"}
    assert held == {alive_route: alive_worker, other.route: other.claimed_by}
    assert alive.poll() is None
    later = make_dispatcher(cfg, store).run_once(T0 + timedelta(minutes=6))
    assert later.sent == 2 and len(receiver.bodies) == 4
    assert {d.state for d in store.alerts.deliveries()} == {"sent"}
    store.close()
