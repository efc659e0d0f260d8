"""Counting slots on a real PostgreSQL: the limits hold across leases (as across worker processes), an acquisition is
all-or-nothing, a lease never counts a slot it holds as free, a killed holder frees its slot at once, and a lost
connection is reconnected without ever releasing a slot that is someone else's now."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from mailwarden.errors import StorageError
from mailwarden.monitor.slots import LOST_WARNING, Need, SlotLease, held_counts
from tests.pg import admin_connect, fresh_database

MAILBOX = Need("mailbox", "imap:support@contoso.com", 2)


@pytest.fixture
def url():
    with fresh_database("slots") as u:
        yield u


@pytest.fixture
async def lease_factory(url):
    made: list[SlotLease] = []

    def make(**kw) -> SlotLease:
        made.append(SlotLease(url, **kw))
        return made[-1]

    yield make
    for lease in made:
        await lease.close()


def lost_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailwarden.slots" and r.levelno == logging.WARNING
            and r.getMessage() == LOST_WARNING]


@pytest.mark.postgres
async def test_a_mailbox_limit_holds_across_leases_and_a_release_lets_the_next_in(url, lease_factory):
    a, b, c = lease_factory(), lease_factory(), lease_factory()
    held_a = await a.acquire([MAILBOX], timeout=1)
    held_b = await b.acquire([MAILBOX], timeout=1)
    assert held_a is not None and held_b is not None
    assert set(held_a.keys).isdisjoint(held_b.keys)
    assert (await held_counts(url))["mailbox"] == 2

    started = time.monotonic()
    assert await c.acquire([MAILBOX], timeout=0.4) is None
    assert 0.4 <= time.monotonic() - started < 2
    assert (await held_counts(url))["mailbox"] == 2  # the refused lease holds nothing

    waiting = asyncio.create_task(c.acquire([MAILBOX], timeout=5))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await a.release(held_a)
    held_c = await asyncio.wait_for(waiting, 5)
    assert held_c is not None
    assert (await held_counts(url))["mailbox"] == 2
    await b.release(held_b)
    await c.release(held_c)
    assert (await held_counts(url))["mailbox"] == 0


@pytest.mark.postgres
async def test_an_acquisition_is_all_or_nothing(url, lease_factory):
    tenant = Need("tenant", "9188040d-6c67-4c5b-b112-36a304b66dad", 1)
    pair = Need("pair", "contoso-helpdesk::imap", 1)
    other, lease = lease_factory(), lease_factory()
    assert await other.acquire([tenant], timeout=1) is not None

    # the pair (taken first) and the mailbox are free, the tenant is full: nothing stays held
    assert await lease.acquire([MAILBOX, tenant, pair], timeout=0.3) is None
    assert await held_counts(url) == {"pair": 0, "tenant": 1, "app": 0, "mailbox": 0}

    # and the slots it gave back are free for others
    third = lease_factory()
    assert await third.acquire([pair], timeout=0) is not None
    assert await third.acquire([MAILBOX], timeout=0) is not None


@pytest.mark.postgres
async def test_one_lease_takes_distinct_slots_and_waits_for_its_own_release(url, lease_factory):
    lease = lease_factory()
    first = await lease.acquire([MAILBOX], timeout=1)
    second = await lease.acquire([MAILBOX], timeout=1)
    assert first is not None and second is not None
    assert first.keys != second.keys  # the server would grant the same key again to this session
    assert (await held_counts(url))["mailbox"] == 2
    assert await lease.acquire([MAILBOX], timeout=0.3) is None

    waiting = asyncio.create_task(lease.acquire([MAILBOX], timeout=5))
    await asyncio.sleep(0.6)  # past the longest pause: the waiter is in a wait now
    released = time.monotonic()
    await lease.release(first)
    third = await asyncio.wait_for(waiting, 5)
    woke_s = time.monotonic() - released
    assert third is not None and third.keys == first.keys
    assert woke_s < 0.2, woke_s  # a release in this process wakes its waiters, no polling pause
    assert (await held_counts(url))["mailbox"] == 2


@pytest.mark.postgres
async def test_a_killed_holder_frees_its_slot_within_two_seconds(url, lease_factory):
    need = Need("mailbox", "imap:killed@contoso.com", 1)
    holder = ("import asyncio, sys\n"
              "from mailwarden.monitor.slots import Need, SlotLease\n"
              "async def main():\n"
              "    lease = SlotLease(sys.argv[1])\n"
              "    held = await lease.acquire([Need('mailbox', 'imap:killed@contoso.com', 1)], timeout=5)\n"
              "    print('held' if held else 'refused', flush=True)\n"
              "    await asyncio.sleep(120)\n"
              "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", holder, url], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "held"
        lease = lease_factory()
        assert await lease.acquire([need], timeout=0.3) is None

        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        held = await lease.acquire([need], timeout=5)
        took = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
    print(f"\nslot free {took * 1000:.0f} ms after SIGKILL of its holder")
    assert held is not None
    assert took < 2


@pytest.mark.postgres
async def test_concurrent_holders_never_exceed_the_limit(url, lease_factory):
    leases = [lease_factory(), lease_factory()]
    holding = peak = 0
    samples: list[tuple[int, int]] = []  # (holders counted here, slots in pg_locks) while nobody came or went
    done = asyncio.Event()

    async def worker(lease: SlotLease) -> None:
        nonlocal holding, peak
        for _ in range(20):
            held = await lease.acquire([MAILBOX], timeout=30)
            assert held is not None
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(random.uniform(0.005, 0.03))
            holding -= 1
            await lease.release(held)

    async def sampler() -> None:
        while not done.is_set():
            before = holding
            pg = (await held_counts(url))["mailbox"]
            assert pg <= 2
            if holding == before:
                samples.append((before, pg))
            await asyncio.sleep(0.01)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(worker(leases[i % 2]) for i in range(6)))
    done.set()
    await sampling
    assert peak == 2
    assert any(here == pg > 0 for here, pg in samples), samples
    assert (await held_counts(url))["mailbox"] == 0


def _terminate(application_name: str) -> None:
    admin, _ = admin_connect()
    with admin:
        pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                            (application_name,))]
        assert len(pids) == 1, pids
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pids[0],))


@pytest.mark.postgres
async def test_a_lost_connection_is_reconnected_and_an_old_slot_is_not_released_twice(url, lease_factory, caplog):
    caplog.set_level(logging.INFO, "mailwarden.slots")
    name = f"slots-{uuid.uuid4().hex[:8]}"
    lease = lease_factory(application_name=name)
    one = Need("mailbox", "imap:lost@contoso.com", 1)
    old = await lease.acquire([one], timeout=1)
    assert old is not None and lease.connected

    await asyncio.to_thread(_terminate, name)
    assert (await held_counts(url))["mailbox"] == 0  # the server freed it with the session

    new = await lease.acquire([one], timeout=1)
    assert new is not None and lease.connected
    assert new.keys == old.keys  # limit 1: the very same key, now held on the new connection
    assert len(lost_warnings(caplog)) == 1
    assert lost_warnings(caplog)[0].slots_lost == 1

    await lease.release(old)  # lost with the old session: must not free the new holder's slot
    assert (await held_counts(url))["mailbox"] == 1
    await lease.release(new)
    assert (await held_counts(url))["mailbox"] == 0
    assert len(lost_warnings(caplog)) == 1


@pytest.mark.postgres
async def test_a_release_after_the_connection_was_lost_is_a_no_op(url, lease_factory, caplog):
    caplog.set_level(logging.INFO, "mailwarden.slots")
    name = f"slots-{uuid.uuid4().hex[:8]}"
    lease = lease_factory(application_name=name)
    held = await lease.acquire([MAILBOX], timeout=1)
    assert held is not None

    await asyncio.to_thread(_terminate, name)
    await lease.release(held)  # no exception: the slot is gone already
    assert not lease.connected
    assert len(lost_warnings(caplog)) == 1

    again = await lease.acquire([MAILBOX], timeout=1)
    assert again is not None and lease.connected
    assert (await held_counts(url))["mailbox"] == 1
    assert len(lost_warnings(caplog)) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_database_is_a_storage_error_without_the_password(caplog):
    password = "Sl0tPassw0rd-do-not-show"
    url = f"postgresql+psycopg://mailwarden:{password}@127.0.0.1:{_closed_port()}/mailwarden"
    lease = SlotLease(url)
    with pytest.raises(StorageError) as err:
        await lease.acquire([MAILBOX], timeout=1)
    text = str(err.value)
    assert "check slots" in text and "127.0.0.1" in text
    assert password not in text
    assert not lease.connected
    with pytest.raises(StorageError) as err:
        await held_counts(url)
    assert password not in str(err.value)
    assert all(password not in r.getMessage() and password not in str(r.__dict__) for r in caplog.records)
    await lease.close()


def test_a_need_outside_the_kinds_or_limits_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Need("integration", "x", 1)
    for limit in (0, 1025):
        with pytest.raises(ValueError, match="limit"):
            Need("mailbox", "x", limit)
