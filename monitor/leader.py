"""Leadership: of the `mailwarden serve` processes sharing one database, exactly one runs the scheduler's jobs
(checks, alert dispatch, history, secrets cycle); every one serves the dashboard and the API.

PostgreSQL: the lease is a session advisory lock (``pg_try_advisory_lock``) held on a dedicated connection.
PostgreSQL drops a session lock with its session, so a leader that dies (SIGKILL, crash, power cut) frees
the lock as soon as the server sees its connection end: at once when the kernel closes the socket, within
about 15 s when the network goes dark (TCP keepalives and ``tcp_user_timeout`` on both ends of that
connection). Followers try to take the lock every ``RETRY_EVERY`` seconds, so a takeover takes seconds,
well inside a minute. The leader verifies its connection every ``VERIFY_EVERY`` seconds.

A leader whose lease connection fails keeps checking, but from then on its results wait in the buffer
(``monitor.buffer``) and dispatch, history and secrets jobs pause, until it has re-taken the lock (tried
every ``RETAKE_EVERY`` seconds); after ``LEASE`` seconds without it, "leadership lease expired" is logged.
If another instance holds the lock by then, it stands down: its jobs stop and its buffer is discarded
(the new leader has been checking meanwhile).

SQLite has no such lock, and a database file is for one process: run a single instance on SQLite.
There it is always the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import make_url

from mailwarden.monitor.db import normalise_url
from mailwarden.redact import redact

log = logging.getLogger("mailwarden.leader")

LOCK_KEY = 726193500450  # beside the migration (...451) and alert evaluation (...452) locks
VERIFY_EVERY = 5.0
LEASE = 20.0
RETRY_EVERY = 3.0  # a follower
RETAKE_EVERY = 1.0  # a leader that lost its connection: after a database restart it gets there first
LOCAL_EVERY = 2.0  # SQLite: only the buffer to flush
# Client side (libpq) and server side (per-session settings): a dead peer is noticed in about 10-15 s.
CLIENT_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                    "tcp_user_timeout": 10_000, "connect_timeout": 5}
SERVER_KEEPALIVE = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
                    "-c tcp_user_timeout=10000")


def connect_params(url: str) -> dict[str, Any]:
    u = make_url(normalise_url(url))
    params: dict[str, Any] = {"host": u.host, "port": u.port, "user": u.username, "password": u.password,
                              "dbname": u.database}
    params = {k: v for k, v in params.items() if v is not None}
    for k, v in u.query.items():  # sslmode, sslrootcert, host=/run/postgresql ...
        params[k] = v if isinstance(v, str) else v[-1]
    return params


class LocalLease:
    """SQLite: a single instance, always the leader."""

    local = True
    held = True
    error: str | None = None

    def acquire(self) -> bool | None:
        return True

    def verify(self) -> bool:
        return True

    def close(self) -> None:
        pass


class PgLease:
    local = False

    def __init__(self, url: str, key: int = LOCK_KEY):
        self.params = {**connect_params(url), **CLIENT_KEEPALIVE, "options": SERVER_KEEPALIVE,
                       "application_name": "mailwarden-leader", "autocommit": True}
        self.key = key
        self.conn: psycopg.Connection | None = None
        self.held = False
        self.error: str | None = None
        self._lock = threading.Lock()

    def acquire(self) -> bool | None:
        """True: the lock is ours; False: another instance holds it; None: the database cannot be reached."""
        with self._lock:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(**self.params)
                row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            except psycopg.Error as exc:
                self._drop(exc)
                return None
            self.held = bool(row and row[0])
            return self.held

    def verify(self) -> bool:
        """A session lock lasts as long as its session: a live connection still holds it."""
        with self._lock:
            if self.conn is None or not self.held:
                return False
            try:
                self.conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self._drop(exc)
                return False
            return True

    def _drop(self, exc: BaseException) -> None:
        self.held = False
        self.error = redact(" ".join(str(exc).split()) or type(exc).__name__)
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def close(self) -> None:
        """Closing the session releases the lock: a follower takes over within RETRY_EVERY."""
        with self._lock:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
            self.conn, self.held = None, False


def lease_for(url: str) -> LocalLease | PgLease:
    return PgLease(url) if normalise_url(url).startswith("postgresql") else LocalLease()


class Leadership:
    """Drives a lease for a Monitor (``lead()``, ``stand_down()``, ``flush()``, ``buffer``)."""

    def __init__(self, lease: LocalLease | PgLease, monitor: Any):
        self.lease = lease
        self.monitor = monitor
        self.leading = lease.local
        self.verified_at = time.monotonic()
        self._expired = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mailwarden-lease")

    @property
    def writable(self) -> bool:
        """May results be written and notifications sent now?"""
        return self.leading and self.lease.held

    async def _call(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def step(self) -> float:
        """One round; returns the seconds until the next."""
        lease, buffer = self.lease, self.monitor.buffer
        if lease.held:
            if await self._call(lease.verify):
                self.verified_at = time.monotonic()
                if len(buffer) or buffer.outage:
                    await self.monitor.flush()
                return LOCAL_EVERY if lease.local else VERIFY_EVERY
            if self.leading:
                log.warning("leadership connection lost", extra={
                    "error": lease.error, "action": "checking on; results are buffered until the lock is re-taken"})
                buffer.unavailable(f"leadership connection lost: {lease.error}")
        got = await self._call(lease.acquire)
        now = time.monotonic()
        if got:
            if not self.leading:
                self.leading = True
                log.info("leadership acquired", extra={"leader": True})
                self.monitor.lead()
            else:
                log.info("leadership re-taken", extra={"after_s": round(now - self.verified_at, 1)})
            self.verified_at, self._expired = now, False
            await self.monitor.flush()
            return VERIFY_EVERY
        if got is False and self.leading:
            self.leading = False
            log.warning("leadership lost", extra={"leader": False, "reason": "another instance holds the lease"})
            self.monitor.stand_down()
        elif got is None and self.leading and not self._expired and now - self.verified_at > LEASE:
            self._expired = True
            log.warning("leadership lease expired", extra={
                "error": lease.error, "action": "checking on and buffering; the lock is re-taken before "
                                                "anything is written or sent, or this instance stands down"})
        return RETAKE_EVERY if self.leading else RETRY_EVERY

    async def run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - leadership must keep being tried whatever happens
                log.exception("leadership round failed")
                delay = RETRY_EVERY
            await asyncio.sleep(delay)

    def close(self) -> None:
        self.lease.close()
        self._pool.shutdown(wait=False)


class LeaderCollector(Collector):
    """``mailwarden_leader``: 1 on the instance that runs the scheduler."""

    def __init__(self, monitor: Any):
        self.monitor = monitor

    def collect(self):
        g = GaugeMetricFamily("mailwarden_leader", "1 when this instance runs the scheduler (holds the lease)")
        g.add_metric([], 1.0 if self.monitor.leading else 0.0)
        yield g
        b = GaugeMetricFamily("mailwarden_buffered_results", "results waiting in memory to be written")
        b.add_metric([], float(len(self.monitor.buffer)))
        yield b
