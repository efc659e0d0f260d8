"""Importing mailwarden caps glibc's malloc arenas (peak RSS, bench/); an operator's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")
                                and not os.path.exists("/lib/aarch64-linux-gnu/libc.so.6"),
                                reason="glibc only: other C libraries have no malloc arenas to cap")


def capped(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    return subprocess.run([sys.executable, "-c", "import monitor; print(monitor.ARENAS_CAPPED)"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_arenas_capped_on_import():
    assert capped({}) == "True"


def test_the_operators_setting_wins():
    assert capped({"MALLOC_ARENA_MAX": "8"}) == "False"
