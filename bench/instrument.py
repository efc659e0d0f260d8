"""Measuring without changing what is measured: which check kind made each identity-provider request
(a context variable set around every check's run, inherited by its worker threads), and the scheduler
with jitter 0."""

from __future__ import annotations

import contextlib
import contextvars
import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

import mailwarden.monitor.scheduler as scheduler_mod
import mailwarden.monitor.tokens as tokens_mod
from mailwarden.checks import REGISTRY

current_kind: contextvars.ContextVar[str] = contextvars.ContextVar("bench_kind", default="-")


class IdpCounter:
    """Requests to the token endpoint and the discovery document, by the check kind that made them."""

    def __init__(self):
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def add(self, kind: str, what: str) -> None:
        with self._lock:
            self.counts[(kind, what)] += 1

    def by(self, what: str) -> dict[str, int]:
        with self._lock:
            return {k: n for (k, w), n in sorted(self.counts.items()) if w == what}


def _what(method: str, url: str) -> str | None:
    if method.upper() == "POST" and "/oauth2/v2.0/token" in url:
        return "token"
    if "openid-configuration" in url:
        return "discovery"
    return None


@contextlib.contextmanager
def instrumented(counter: IdpCounter):
    original_session = tokens_mod.http_session

    def counting_session(endpoints):
        session = original_session(endpoints)
        request = session.request

        def counted(method, url, *args, **kwargs):
            what = _what(method, url)
            if what:
                counter.add(current_kind.get(), what)
            return request(method, url, *args, **kwargs)

        session.request = counted
        return session

    def tagged(kind, run):
        async def run_tagged(ctx):
            token = current_kind.set(kind)
            try:
                return await run(ctx)
            finally:
                current_kind.reset(token)
        return run_tagged

    tokens_mod.http_session = counting_session
    for kind, check in REGISTRY.items():
        check.run = tagged(kind, check.run)  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        tokens_mod.http_session = original_session
        for check in REGISTRY.values():
            del check.run  # back to the class's method


class _NoJitter:
    """IntervalTrigger with jitter forced to 0."""

    def __new__(cls, *args, **kwargs):
        kwargs["jitter"] = None
        return _REAL_TRIGGER(*args, **kwargs)


_REAL_TRIGGER = scheduler_mod.IntervalTrigger


@contextlib.contextmanager
def no_jitter():
    """Jitter 0: intervals unjittered, and the start offsets at their lower bound (token checks at once,
    the rest 3 s later, as the scheduler orders them)."""
    real_random = scheduler_mod.random
    scheduler_mod.IntervalTrigger = _NoJitter  # type: ignore[misc,assignment]
    scheduler_mod.random = SimpleNamespace(uniform=lambda a, b: a)  # type: ignore[assignment]
    try:
        yield
    finally:
        scheduler_mod.IntervalTrigger = _REAL_TRIGGER  # type: ignore[misc]
        scheduler_mod.random = real_random


class GcPauses:
    """Every garbage collection while active (``gc.callbacks``): how many per generation, and how long each stopped
    the process (a collection holds the GIL: every thread and the event loop wait for it)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started: float | None = None
        self._ignoring = False
        self._marks: list[int] = []  # where each cycle's pauses end (``mark``)

    def mark(self) -> None:
        """A cycle ended: the pauses since the last mark are its own (``summary``'s ``by_cycle``)."""
        self._marks.append(len(self.pauses))

    @contextlib.contextmanager
    def ignoring(self) -> Iterator[None]:
        """Collections made on purpose in the block (``monitor.freeze_heap``'s own, once per process) are not
        counted."""
        self._ignoring = True
        try:
            yield
        finally:
            self._ignoring = False

    def _callback(self, phase: str, info: dict) -> None:
        if self._ignoring:
            self._started = None
        elif phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses.append((int(info["generation"]), time.perf_counter() - self._started))
            self._started = None

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        def longest(gen: int | None) -> float:
            return round(max((s for g, s in self.pauses if gen is None or g == gen), default=0.0) * 1000, 2)

        by_cycle = []
        for start, end in zip([0, *self._marks], self._marks, strict=False):
            part = self.pauses[start:end]
            by_cycle.append({"full": sum(1 for g, _ in part if g == 2),
                             "longest_ms": round(max((d for _, d in part), default=0.0) * 1000, 2)})
        return {"collections": {str(g): sum(1 for x, _ in self.pauses if x == g) for g in (0, 1, 2)},
                "longest_ms": longest(None), "longest_full_ms": longest(2),
                "total_ms": round(sum(s for _, s in self.pauses) * 1000, 1), "by_cycle": by_cycle}


def full_collection_ms() -> tuple[float, int]:
    """A full collection (generation 2) of the heap as it is now, timed: the longest a collection stops the process,
    and the objects it tracks."""
    started = time.perf_counter()
    gc.collect()
    return round((time.perf_counter() - started) * 1000, 2), len(gc.get_objects())
