"""Rate limits per client (or per user name) that stay bounded in memory and cannot be cleared by a flood of
new keys.

Each key keeps one number, its theoretical arrival time (GCRA, the generic cell rate algorithm): ``limit``
events are allowed at once, then one per ``window_s / limit`` seconds, and a key that has been quiet for the
window is back to a full allowance. A key whose time has passed knows nothing that a new key does not, so it
is dropped first when the table is full; when every key is still counting, the one nearest to forgetting is
dropped (a heap ordered by that time). A key at its limit is the last to go: an attacker who makes new keys
(source addresses) evicts their own fresh keys, never the counter of a key that is being held back.

``client_key`` turns a client address into the key: an IPv6 address counts by its /64, because one host is
usually given a whole /64 and could otherwise step through 2**64 addresses.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import threading
import time

CAPACITY = 10_000


def client_key(host: str | None) -> str:
    """The key of a client address: an IPv4 address itself, an IPv6 address its /64, anything else as is."""
    if not host:
        return "-"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class Throttle:
    """``limit`` events per ``window_s`` for each key, at most ``capacity`` keys. Thread-safe: the login check
    runs in a worker thread."""

    def __init__(self, limit: int, window_s: float, capacity: int = CAPACITY):
        if limit < 1 or window_s <= 0 or capacity < 1:
            raise ValueError("limit, window_s and capacity must be positive")
        self.limit, self.window_s, self.capacity = limit, float(window_s), capacity
        self.interval = self.window_s / limit  # one event per interval once the burst is spent
        self.tolerance = self.window_s - self.interval  # how far ahead of now a key's time may run
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time (monotonic seconds)
        self._heap: list[tuple[float, str]] = []  # (tat, key); entries whose tat changed are skipped
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tat)

    @staticmethod
    def _now(now: float | None) -> float:
        return time.monotonic() if now is None else now

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may act again: 0 when it may now. Records nothing."""
        now = self._now(now)
        with self._lock:
            tat = self._tat.get(key)
        if tat is None:
            return 0.0
        return max(0.0, tat - self.tolerance - now)

    def hit(self, key: str, now: float | None = None) -> float:
        """Count one event for ``key`` if it is allowed: returns 0 then, else the seconds to wait (nothing
        counted, so a key held back does not dig itself deeper)."""
        now = self._now(now)
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            if tat - now > self.tolerance:
                return tat - self.tolerance - now
            self._set(key, tat + self.interval, now)
            return 0.0

    def allow(self, key: str, now: float | None = None) -> bool:
        return self.hit(key, now) == 0.0

    def reset(self, key: str) -> None:
        with self._lock:
            self._tat.pop(key, None)

    def _set(self, key: str, tat: float, now: float) -> None:
        if key not in self._tat and len(self._tat) >= self.capacity:
            self._evict(now)
        self._tat[key] = tat
        heapq.heappush(self._heap, (tat, key))
        if len(self._heap) > 4 * self.capacity:  # stale entries of keys hit again: rebuild
            self._heap = [(t, k) for k, t in self._tat.items()]
            heapq.heapify(self._heap)

    def _evict(self, now: float) -> None:
        """Drop the key whose time comes first: one that has forgotten everything when there is one,
        else the one nearest to it (never a key at its limit while another is not)."""
        while self._heap:
            tat, key = heapq.heappop(self._heap)
            if self._tat.get(key) == tat:
                del self._tat[key]
                return
        # the heap lost track (cannot happen: every _tat entry was pushed); fall back to a full scan
        if self._tat:  # pragma: no cover
            key = min(self._tat, key=self._tat.__getitem__)
            del self._tat[key]


def retry_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
