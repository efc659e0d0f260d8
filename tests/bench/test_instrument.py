"""The bench's garbage-collection figures (issue 20, item 5: a full collection must not stall a cycle)."""

from __future__ import annotations

import gc

from bench.instrument import GcPauses, full_collection_ms
from bench.report import verdict


def test_gc_pauses_counts_collections_by_generation_and_times_them():
    with GcPauses() as pauses:
        gc.collect(0)
        gc.collect(2)
    gc.collect()  # after the block: not counted
    s = pauses.summary()
    assert s["collections"]["0"] >= 1 and s["collections"]["2"] >= 1
    assert len(pauses.pauses) == sum(s["collections"].values())
    assert 0 < s["longest_full_ms"] <= s["longest_ms"] <= s["total_ms"] + 0.01
    assert gc.callbacks.count(pauses._callback) == 0  # removed


def test_a_full_collection_is_timed_over_the_live_heap():
    ms, objects = full_collection_ms()
    assert ms > 0 and objects > 1000


def test_the_pause_target_is_one_round_trip():
    assert verdict("gc_longest_pause_ms", 12.0) == "PASS"
    assert verdict("gc_longest_pause_ms", 80.0) == "FAIL"


def test_collections_made_on_purpose_are_not_counted():
    with GcPauses() as pauses:
        with pauses.ignoring():
            gc.collect()
        gc.collect(0)
    assert pauses.summary()["collections"]["2"] == 0 and pauses.summary()["collections"]["0"] >= 1


def test_pauses_are_told_by_cycle():
    """Cycle 1 runs before the warm freeze (as `serve`'s first interval) and the later ones after it: each cycle's
    full collections and longest pause are its own."""
    with GcPauses() as pauses:
        gc.collect(2)
        pauses.mark()
        gc.collect(0)
        pauses.mark()
        pauses.mark()
    by_cycle = pauses.summary()["by_cycle"]
    assert [c["full"] for c in by_cycle] == [1, 0, 0]
    assert by_cycle[0]["longest_ms"] > 0 and by_cycle[2]["longest_ms"] == 0
