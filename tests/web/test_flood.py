"""The load test of the hardening issue: an outsider's flood of bad HTTP Basic requests changes no check result.

As `serve` runs it: the real Monitor (scheduler, runner, SQLite store) and the web app in one event loop, the
sandbox in its own process on loopback, the admin password at the default scrypt cost (~130 ms a verification
on two cores). 20 bad Basic requests a second for 30 s, from 100 loopback source addresses (so that the
per-client limit does not end the flood by itself). Bounded: about 45 s, loopback only. The /healthz delay
under the same flood is a figure of `python -m bench.flood`, not asserted here."""

from __future__ import annotations

import asyncio

import pytest

from bench.flood import serve_and_flood, start_sandbox


@pytest.mark.slow
def test_a_flood_of_bad_basic_requests_changes_no_check_result(tmp_path):
    """Attacks the event loop shared with the checks: Basic verification ran scrypt on it, so a flood of bad
    Basic requests stalled the checks (measured before the fix: 4 of 21 results 'error (timeout)' where ~60 ok
    were due, /healthz answering after 22 s). Every result during the flood must be ok, each check must have run
    as scheduled, the flood must have been answered (401 or 429), and scrypt must never have run on a thread
    with an event loop."""
    sb, config_path = start_sandbox(tmp_path, 5)
    try:
        [phase] = asyncio.run(serve_and_flood(config_path, rate=20, seconds=30, phases=("flood",)))
    finally:
        sb.stop()
    assert set(phase.results) == {"ok"}, phase.results
    assert phase.results["ok"] >= 5 * 2 * 4, phase.results  # 10 checks every 5 s for 30 s: ~60 due
    assert set(phase.answers) <= {401, 429} and sum(phase.answers.values()) == 600, phase.answers
    assert phase.scrypt_threads, "no verification ran: the flood never reached scrypt"
    assert not any("event loop" in where for where in phase.scrypt_threads), phase.scrypt_threads
