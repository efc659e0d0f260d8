"""mailwarden's application layer. Importing it changes nothing in the process: the long-running commands
(`mailwarden serve`, `mailwarden demo`) tune glibc's malloc at start with ``tune_malloc``."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, NamedTuple

_M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024


@functools.cache
def _libc() -> Any:
    """glibc as a ctypes library, None elsewhere (musl has neither mallopt arenas nor malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or "libc.so" not in name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _mallopt(param: int, value: int, env: str) -> bool:
    libc = _libc()
    if libc is None or env in os.environ:
        return False
    try:
        return bool(libc.mallopt(param, value))
    except AttributeError:
        return False


def _cap_malloc_arenas() -> bool:
    """Two malloc arenas instead of glibc's eight per core: the checks run in about thirty worker threads, and
    each thread that allocates in C (TLS buffers, SQLite, replies) got an arena of its own whose freed memory
    stayed mapped: 15 MB more peak RSS at 1,000 integrations (bench/). The GIL already serialises most of
    those allocations. An explicit MALLOC_ARENA_MAX in the environment wins; other C libraries are left alone."""
    return _mallopt(_M_ARENA_MAX, MALLOC_ARENAS, "MALLOC_ARENA_MAX")


def _pin_mmap_threshold() -> bool:
    """Blocks of 128 KiB and more come from mmap and go back to the system when freed. glibc's own threshold
    starts there but rises to the largest block freed so far (up to 32 MiB), after which big short-lived
    buffers (replies, TLS, SQLite) are carved from the heap between long-lived blocks and their pages stay
    behind: the 30-minute soak's RSS crept up while the bytes in use did not (bench/RESULTS.md). Setting it
    turns the rise off. MALLOC_MMAP_THRESHOLD_ in the environment wins."""
    return _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_")


class MallocTuning(NamedTuple):
    arenas_capped: bool  # False: not glibc, or MALLOC_ARENA_MAX set by the operator
    mmap_threshold_pinned: bool  # False: not glibc, or MALLOC_MMAP_THRESHOLD_ set by the operator


def preload_checks(config: Any) -> None:
    """Before the first ``freeze_heap`` of a long-running command: import what the configured checks would import
    lazily at their first run (``checks.graph_mail.preload``: msgraph-sdk and its dependencies), so it is frozen with
    the rest. The one-shot commands do not: they would pay half a second for it."""
    if any("graph_mail" in i.checks for i in config.integrations):
        from mailwarden.checks import graph_mail

        graph_mail.preload(config.endpoints_resolved())


def freeze_heap() -> int:
    """Collect, then take every object alive now out of the garbage collector's sight (``gc.freeze``). A full
    collection walks every tracked object, and most of a running service's are modules, classes and functions that
    never become garbage: walking 130,000-210,000 of them stopped the process for 90-180 ms at each full collection
    on a 2-core machine (bench/). The long-running commands call it once their runtime is open, again once every
    check has run (``freeze_later``: the lazy imports are done), and ``refreeze_heap`` after a reload. Returns the
    number of objects frozen. Process-wide, as ``tune_malloc``."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refreeze_heap() -> int:
    """After a reload, once the checks that took the old runtime have ended: give every frozen object back to the
    collector, collect (one full pause), freeze again. A frozen object that has become garbage in a reference cycle
    (the old runtime's) is collected only this way; one still in use when it runs (a check under way holding the old
    runtime and the connections its store opens) would be frozen again for good, hence the wait."""
    import gc

    gc.unfreeze()
    return freeze_heap()


async def freeze_later(after_s: float, *, thaw: bool = False) -> None:
    """``freeze_heap`` (``thaw``: ``refreeze_heap``) once ``after_s`` seconds have passed: at start, by then every
    check has run once and imported what it imports at first use (msgraph-sdk's models, Apprise's plugins); after a
    reload, every check that took the old runtime has ended."""
    import asyncio
    import logging
    import time

    await asyncio.sleep(after_s)
    started = time.perf_counter()
    frozen = refreeze_heap() if thaw else freeze_heap()
    logging.getLogger("mailwarden.memory").info("heap frozen", extra={
        "objects": frozen, "pause_ms": round((time.perf_counter() - started) * 1000, 1), "after_reload": thaw})


def tune_malloc() -> MallocTuning:
    """Tune glibc's malloc for a long-running service: arenas capped at ``MALLOC_ARENAS``, the mmap threshold
    pinned at ``MMAP_THRESHOLD``. Call it at the start of the process, before its worker threads allocate (an
    arena a thread already has stays). A setting the operator made in the environment is left as glibc read
    it. Process-wide and meant for a command's process only: a library user's process is not changed."""
    return MallocTuning(_cap_malloc_arenas(), _pin_mmap_threshold())


def trim_heap() -> bool:
    """Give the free pages inside malloc's heaps back to the system (glibc ``malloc_trim``): freed memory
    in the middle of a heap is otherwise kept until the blocks above it go. Called by the scheduler's
    minutely housekeeping; a few milliseconds, in a worker thread (ctypes releases the GIL)."""
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False
