"""HTTP Basic on /api and /metrics against a flood (issue: nothing an outsider sends can silence the monitor).

The web app shares its event loop with the scheduler, the checks and the dispatcher; scrypt costs ~100 ms of
CPU at the default cost. These tests pin where scrypt runs, how often, and who is made to wait."""

from __future__ import annotations

import asyncio
import base64
import threading

import pytest

from mailwarden.monitor.web import auth
from tests.web.conftest import PASSWORD, basic, login


@pytest.fixture
def scrypt_calls(monkeypatch):
    """Every password verification: (thread name, whether that thread runs an event loop)."""
    calls: list[tuple[str, bool]] = []
    real = auth.verify_password

    def spy(password: str, stored: str) -> bool:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((threading.current_thread().name, on_loop))
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", spy)
    return calls


def test_scrypt_never_runs_on_the_event_loop(world, scrypt_calls):
    """Attacks the shared event loop: Basic verification ran scrypt inline in the Gate, on the loop that runs
    the checks, so 2-3 bad Basic requests a second stalled every check into timeouts. Every verification (Basic
    good or bad, and the login form) must run in a thread that runs no event loop."""
    with world.client() as c:
        assert c.get("/api/status", headers=basic()).status_code == 200
        assert c.get("/api/status", headers=basic(password="wrong")).status_code == 401
        assert login(c, "wrong").status_code == 401
    assert len(scrypt_calls) == 3, scrypt_calls
    assert not any(on_loop for _, on_loop in scrypt_calls), scrypt_calls
    assert all(name.startswith("mailwarden-auth") for name, _ in scrypt_calls), scrypt_calls


def test_a_verified_basic_header_is_remembered_by_a_hash_never_the_password(world, scrypt_calls):
    """Attacks the cost of every scrape: each valid Basic request of /metrics ran scrypt again (~150 ms of
    blocked loop per scrape). A header that verified is taken from a short cache, keyed by an HMAC of the
    header: neither the password nor the header is kept."""
    access = world.access()
    header = basic()["Authorization"]
    with world.client(world.app(access)) as c:
        for _ in range(5):
            assert c.get("/metrics", headers=basic()).status_code == 200
        assert c.get("/api/status", headers=basic()).status_code == 200
    assert len(scrypt_calls) == 1
    kept = repr(dict(access._verified)) + repr(dict(access._refused))
    assert PASSWORD not in kept and header.split()[1] not in kept and "admin" in kept
    assert all(isinstance(k, bytes) and len(k) == 32 for k in access._verified)


def test_failed_basic_is_throttled_per_client_with_retry_after(world, scrypt_calls):
    """Attacks the password over Basic, and the CPU: there was no limit, every guess ran scrypt. After 10 failed
    guesses from one client the answer is 429 with Retry-After and no scrypt runs; a second client is not held
    back; the same wrong header sent again is neither verified again nor counted as another guess."""
    app = world.app()
    with world.client(app, client=("198.51.100.7", 40000)) as c:
        for _ in range(5):  # a scraper with a stale password: one verification, not five guesses
            assert c.get("/metrics", headers=basic(password="stale")).status_code == 401
        codes = [c.get("/api/status", headers=basic(password=f"guess-{i}")).status_code for i in range(11)]
        assert codes == [401] * 9 + [429, 429], codes
        r = c.get("/api/status", headers=basic(password="guess-x"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"].startswith("too many failed sign-ins")
        assert "content-security-policy" in r.headers
    assert len(scrypt_calls) == 10
    with world.client(app, client=("198.51.100.8", 40000)) as other:
        assert other.get("/api/status", headers=basic()).status_code == 200


def test_verifications_waiting_are_bounded(world, monkeypatch):
    """Attacks memory and CPU with many clients at once: each waiting verification would hold scrypt's 32 MiB
    and a thread. Past VERIFY_QUEUE waiting verifications the answer is 429 at once, without scrypt."""
    gate = threading.Event()
    real = auth.verify_password

    def slow(password: str, stored: str) -> bool:
        gate.wait(10)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", slow)
    access = world.access()

    async def flood():
        async def one(i: int):
            header = "Basic " + base64.b64encode(f"admin:guess-{i}".encode()).decode()
            try:
                return await access.basic(header, f"203.0.113.{i}")
            except auth.Throttled as exc:
                return exc.status_code

        tasks = [asyncio.create_task(one(i)) for i in range(auth.VERIFY_QUEUE + 5)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks)

    out = asyncio.run(flood())
    assert out.count(429) == 5 and out.count(None) == auth.VERIFY_QUEUE, out
