"""Importing mailwarden caps glibc's malloc arenas (peak RSS, bench/) and pins its mmap threshold (the soak's RSS
creep); an operator's MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ wins. The heap trim gives pages back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")
                                and not os.path.exists("/lib/aarch64-linux-gnu/libc.so.6"),
                                reason="glibc only: other C libraries have no malloc arenas to cap")


def capped(env_extra: dict[str, str], flag: str = "ARENAS_CAPPED") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    return subprocess.run([sys.executable, "-c", f"import monitor; print(monitor.{flag})"], env=env | env_extra,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_arenas_capped_on_import():
    assert capped({}) == "True"


def test_the_operators_setting_wins():
    assert capped({"MALLOC_ARENA_MAX": "8"}) == "False"


def test_mmap_threshold_pinned_on_import_unless_the_operator_sets_it():
    assert capped({}, "MMAP_THRESHOLD_PINNED") == "True"
    assert capped({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MMAP_THRESHOLD_PINNED") == "False"


def test_the_heap_trim_gives_freed_pages_back():
    """Freed memory inside the heap is kept by malloc until trimmed: RSS falls when trim_heap runs."""
    code = """
import ctypes, monitor
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
blocks = [libc.malloc(4000) for _ in range(20000)]  # 80 MB in small blocks: from the heap, not mmap
for b in blocks:
    ctypes.memset(b, 1, 4000)
keep = blocks[-1]
for b in blocks[:-1]:
    libc.free(b)  # the block at the top stays: the heap cannot shrink from its end
before = rss()
print(monitor.trim_heap(), before - rss())
"""
    trimmed, freed_kb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.split()
    assert trimmed == "True" and int(freed_kb) > 50_000
