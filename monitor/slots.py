"""Counting slots across worker processes (queue mode): at most ``limit`` concurrent holders of a name, whichever
``mailwarden worker`` runs them. Microsoft throttles per mailbox, per app and per tenant, and a check must not run
twice at once for the same integration, so a job takes one slot of each before its probe starts.

A slot is a PostgreSQL session advisory lock on ``(k1, k2)``: ``k1 = NAMESPACE + kind_index * 1024 + slot`` and
``k2`` the signed CRC-32 of the name. CRC-32 is stable across Python and PostgreSQL versions (``hashtext`` is not);
two names that collide share their slots, which is stricter, never looser. A need of limit N may take any one of the
slots ``0 .. N-1`` of its name.

Why session locks on one dedicated connection per process (``SlotLease``): the server frees them the moment the
session ends, so a worker killed with SIGKILL gives its slots back at once (within about 15 s when the network goes
dark: the keepalives of ``monitor.leader``), and one connection serves every running check of the worker. A
transaction-level lock would keep a transaction, and so a connection, open per running check.

Only try-locks are used (``pg_try_advisory_lock``), so no two workers can deadlock: an acquisition that cannot get
every slot it needs gives back what it took and waits 0.05-0.5 s (or until this process releases one) before it
tries again. Advisory locks are re-entrant within a session, so this process keeps its own set of held keys and never
counts a slot it holds already as a free one.

When the connection is lost the server has freed every slot of this process at once; the checks running keep
running, so the limits may be exceeded until they end. The next acquisition reconnects. Releasing a slot that was
lost that way does nothing (a newer holder of the same key must keep it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailwarden.errors import StorageError
from mailwarden.monitor.db import display_url, normalise_url
from mailwarden.monitor.leader import CLIENT_KEEPALIVE, SERVER_KEEPALIVE, connect_params
from mailwarden.redact import MASK, redact

log = logging.getLogger("mailwarden.slots")

KINDS = ("pair", "tenant", "app", "mailbox")  # acquired in this order
MAX_LIMIT = 1024  # slots per kind and name: the width of a kind's k1 range
# int32 (the two-key form of the advisory lock functions): "MW\0\0". pg_locks shows two-key locks with objsubid=2,
# so these never meet leader.py's bigint keys 726193500450-452 (objsubid=1), whatever their values.
NAMESPACE = 0x4D570000
WAIT_MIN, WAIT_MAX = 0.05, 0.5  # seconds between attempts while a slot is busy (until a local release)
LOST_WARNING = "slot connection lost: limits may be exceeded until running checks end"

Key = tuple[int, int]


@dataclass(frozen=True)
class Need:
    """One slot to take: of ``kind`` (see ``KINDS``), for ``name``, with at most ``limit`` holders at once."""

    kind: str
    name: str
    limit: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"slot kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"slot limit {self.limit!r} for {self.kind} {self.name!r} is not 1..{MAX_LIMIT}")

    def key(self, slot: int) -> Key:
        return NAMESPACE + KINDS.index(self.kind) * MAX_LIMIT + slot, name_key(self.name)


def name_key(name: str) -> int:
    """The signed 32-bit CRC of the name: PostgreSQL's int4 ``key2``."""
    crc = zlib.crc32(name.encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass(frozen=True)
class Held:
    """The slots one acquisition took, on the lease's connection number ``session`` (a slot of an earlier
    connection was freed by the server when that connection ended)."""

    keys: tuple[Key, ...]
    session: int


class SlotLease:
    """The slots of one process: a dedicated autocommit connection, used by one coroutine at a time."""

    def __init__(self, url: str, *, application_name: str = "mailwarden-slots"):
        self.display = display_url(url)
        self._password = _password(url)
        self._params = {**connect_params(url), **CLIENT_KEEPALIVE, "options": SERVER_KEEPALIVE,
                        "application_name": application_name, "autocommit": True}
        self._conn: psycopg.AsyncConnection | None = None
        self._session = 0  # bumped whenever a connection (and so every slot held on it) is lost
        self._held: set[Key] = set()
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()  # replaced at each release; waiters retry when it is set
        self._cleanup: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        """A connection is open (as far as this process knows: a dead peer shows when the connection is next used,
        or within the keepalive time)."""
        return self._conn is not None and not self._conn.closed

    async def acquire(self, needs: Sequence[Need], *, timeout: float) -> Held | None:
        """One slot of every need, or nothing: None when they could not all be had within ``timeout`` seconds.
        Raises StorageError when the database cannot be reached."""
        ordered = sorted(needs, key=lambda n: KINDS.index(n.kind))
        deadline = time.monotonic() + max(0.0, timeout)
        waits = 0
        while True:
            released = self._released  # a release from now on wakes the wait below
            attempt = asyncio.ensure_future(self._attempt(ordered))
            try:
                held = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                # the attempt runs to its end (a query cut short would leave the connection unusable);
                # whatever it took is given back then
                attempt.add_done_callback(self._give_back)
                raise
            if held is not None:
                return held
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            waits += 1
            pause = random.uniform(WAIT_MIN, min(WAIT_MAX, WAIT_MIN * 2 ** waits))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), min(pause, left))

    async def release(self, held: Held) -> None:
        """Give the slots back. Slots lost with their connection are not released again."""
        await asyncio.shield(self._release(held))

    @contextlib.asynccontextmanager
    async def hold(self, needs: Sequence[Need], *, timeout: float) -> AsyncIterator[Held | None]:
        """``acquire`` for the block, then ``release``; the block runs with None when the slots could not be had."""
        held = await self.acquire(needs, timeout=timeout)
        try:
            yield held
        finally:
            if held is not None:
                await self.release(held)

    async def close(self) -> None:
        """Closing the session frees every slot this process holds."""
        async with self._lock:
            conn, self._conn = self._conn, None
            self._held.clear()
            self._session += 1
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._wake()

    # -- under self._lock --------------------------------------------------------------------------------------

    async def _attempt(self, needs: Sequence[Need]) -> Held | None:
        async with self._lock:
            while True:
                fresh = self._conn is None or self._conn.closed
                if fresh:
                    await self._connect()
                conn = self._conn
                assert conn is not None
                try:
                    keys = await self._take(conn, needs)
                except psycopg.Error as exc:
                    await self._lost(exc)
                    if fresh:
                        raise self._error("lost the connection", exc) from None
                    continue  # a connection that had gone stale: one more try on a new one
                if keys is None:
                    return None
                self._held.update(keys)
                return Held(tuple(keys), self._session)

    async def _connect(self) -> None:
        try:
            self._conn = await psycopg.AsyncConnection.connect(**self._params)
        except psycopg.Error as exc:
            self._conn = None
            raise self._error("cannot connect", exc) from None

    async def _take(self, conn: psycopg.AsyncConnection, needs: Sequence[Need]) -> list[Key] | None:
        """One try at every need: the keys taken, or None with nothing taken."""
        taken: list[Key] = []
        asked = False
        for need in needs:
            got = None
            start = random.randrange(need.limit)
            for i in range(need.limit):
                key = need.key((start + i) % need.limit)
                if key in self._held or key in taken:  # re-entrant: the server would grant it to us again
                    continue
                asked = True
                row = await (await conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", key)).fetchone()
                if row and row[0]:
                    got = key
                    break
            if got is None:
                for key in reversed(taken):
                    await conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", key)
                if not asked:
                    # every slot is ours already: still touch the session, so that a lost connection (and with
                    # it every slot) shows now, not at the next release
                    await conn.execute("SELECT 1")
                return None
            taken.append(got)
        return taken

    async def _release(self, held: Held) -> None:
        async with self._lock:
            if held.session != self._session or self._conn is None:
                return  # lost with its connection: the server freed it, and the key may be someone else's now
            conn = self._conn
            try:
                for key in held.keys:
                    if key in self._held:
                        await conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", key)
                        self._held.discard(key)
            except psycopg.Error as exc:
                await self._lost(exc)
        self._wake()

    async def _lost(self, exc: BaseException) -> None:
        """The session is gone, or in a state we cannot trust: end it, so that the server frees all of its slots."""
        conn, self._conn = self._conn, None
        had = len(self._held)
        self._held.clear()
        self._session += 1
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        extra = {"slots_lost": had, "database": self.display, "error": self._reason(exc)}
        if had:
            log.warning(LOST_WARNING, extra=extra)
        else:  # no check runs on a slot of this connection: no limit can be exceeded
            log.info("slot connection lost", extra=extra)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        released, self._released = self._released, asyncio.Event()
        released.set()

    def _give_back(self, attempt: asyncio.Future[Held | None]) -> None:
        """An acquisition was cancelled while its attempt ran: release what the attempt took."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        held = attempt.result()
        if held is None:
            return
        task = asyncio.ensure_future(self._release(held))
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    def _reason(self, exc: BaseException) -> str:
        text = redact(" ".join(str(exc).split()) or type(exc).__name__)
        return text.replace(self._password, MASK) if self._password else text

    def _error(self, what: str, exc: BaseException) -> StorageError:
        return StorageError(f"check slots: {what} to the database {self.display}: {self._reason(exc)}",
                            hint="Checks wait for their slots until PostgreSQL can be reached again")


async def held_counts(url: str) -> dict[str, int]:
    """Slots held right now in the URL's database, per kind, by every process (pg_locks: metrics and tests)."""
    password = _password(url)
    params = {**connect_params(url), "connect_timeout": 5, "application_name": "mailwarden-slots-count",
              "autocommit": True}
    try:
        async with await psycopg.AsyncConnection.connect(**params) as conn:
            cur = await conn.execute(
                "SELECT (classid::int8 - %(ns)s) / %(width)s AS kind, count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid::int8 BETWEEN %(ns)s AND %(ns)s + %(width)s * %(kinds)s - 1 GROUP BY 1",
                {"ns": NAMESPACE, "width": MAX_LIMIT, "kinds": len(KINDS)})
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        text = redact(" ".join(str(exc).split()) or type(exc).__name__)
        text = text.replace(password, MASK) if password else text
        raise StorageError(f"check slots: cannot count them in the database {display_url(url)}: {text}") from None
    counts = dict.fromkeys(KINDS, 0)
    for kind, n in rows:
        counts[KINDS[int(kind)]] = int(n)
    return counts


def _password(url: str) -> str | None:
    try:
        return make_url(normalise_url(url)).password
    except ArgumentError:
        return None

