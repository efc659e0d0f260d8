"""Results written together (``CheckRepository.record_results``, the result pipeline's ``GroupWriter``) are stored
exactly as if written one by one: the same rows, states and transitions, on SQLite and on PostgreSQL; every caller
hears its own result's fate."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden import state as sm
from mailwarden.checks.base import Outcome, Status
from mailwarden.errors import StorageError
from mailwarden.monitor.db import Pending, open_store
from mailwarden.monitor.models import CheckResult, CheckState, Transition
from mailwarden.monitor.pipeline import GroupWriter, ResultPipeline
from mailwarden.redact import MASK, register_secret

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATUSES = ["ok", "ok", "fail", "fail", "error", "warn", "blocked"]
THRESHOLDS = [sm.Thresholds(1, 1), sm.Thresholds(2, 1), sm.Thresholds(3, 2)]


def sequence(seed: int, n: int) -> list[Pending]:
    """``n`` results over 3 integrations x 2 checks, the same check often several times in a row."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        status = rnd.choice(STATUSES)
        outcome = Outcome(Status(status), None if status == "ok" else f"{status}_code", f"{status} #{i}",
                          latency_ms=float(i), metrics={"i": i},
                          retry_after_s=30.0 if status == "warn" and i % 2 else None)
        out.append(Pending(f"i{rnd.randrange(3)}", rnd.choice(["token", "pop"]), outcome,
                           T0 + timedelta(minutes=i), THRESHOLDS[i % 3 if seed % 2 else 1]))
    return out


def all_results(store) -> list[CheckResult]:
    """Every stored result, in id order."""
    return sorted((r for n in range(6) for r in store.checks.results(f"i{n}", limit=1000)), key=lambda r: r.id)


def stored(store) -> tuple:
    results = [(r.integration, r.check, r.status, r.code, r.summary, r.latency_ms, r.details, r.checked_at)
               for r in all_results(store)]
    states = sorted((s.integration, s.check, s.status, s.failures, s.successes, s.since, s.last_status, s.last_code,
                     s.last_checked_at, s.last_ok_at, s.not_before) for s in store.checks.states())
    transitions = [(t.integration, t.check, t.from_status, t.to_status, t.code, t.at, t.silent)
                   for t in sorted(store.checks.transitions(limit=1000), key=lambda t: t.id)]
    return results, states, transitions


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_stores_what_one_by_one_would(database_url, tmp_path, seed):
    items = sequence(seed, 40)
    one_by_one = open_store(f"sqlite:///{tmp_path / 'one.db'}")
    singles = [one_by_one.checks.record_result(integration=p.integration, check=p.check, outcome=p.outcome,
                                               checked_at=p.checked_at, thresholds=p.thresholds) for p in items]
    together = open_store(database_url)
    sizes = [1, 7, 3, 16, 13]  # batches of several sizes, the same check several times in one
    got, at = [], 0
    for size in sizes:
        got += together.checks.record_results(items[at:at + size])
        at += size
    assert at == len(items)
    assert stored(together) == stored(one_by_one)
    # each caller's own row, transition and previous status
    assert [(r.result.summary, r.previous, r.transition and (r.transition.from_status, r.transition.to_status))
            for r in got] == \
        [(r.result.summary, r.previous, r.transition and (r.transition.from_status, r.transition.to_status))
         for r in singles]
    ids = [r.result.id for r in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for r in got:  # the state points at the last result of its check
        st = together.checks.get_state(r.result.integration, r.result.check)
        assert st.last_result_id >= r.result.id
    one_by_one.close()
    together.close()


def test_concurrent_batches_over_the_same_checks_lose_nothing(store):
    """Two writers (two workers of queue mode) write batches over the same checks in opposite orders at once: none
    waits for the other forever (the states are locked in key order), and every result is folded once."""
    keys = [(f"i{n}", kind) for n in range(6) for kind in ("token", "pop")]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(order: list[tuple[str, str]], minute0: int) -> None:
        try:
            barrier.wait()
            for round_ in range(8):
                store.checks.record_results([
                    Pending(i, c, Outcome(Status.OK if (round_ + n) % 3 else Status.FAIL, None, "x"),
                            T0 + timedelta(minutes=minute0 + round_, seconds=n), THRESHOLDS[1])
                    for n, (i, c) in enumerate(order)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(keys, 0)),
               threading.Thread(target=writer, args=(list(reversed(keys)), 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert store.count(CheckResult) == 2 * 8 * len(keys) and store.count(CheckState) == len(keys)
    for i, c in keys:  # each state is the replay of its results in the order they were folded
        replay = sm.StateSnapshot()
        for r in sorted(store.checks.results(i, c, limit=100), key=lambda r: r.id):
            replay, _ = sm.advance(replay, r.status, THRESHOLDS[1], r.checked_at)
        st = store.checks.get_state(i, c)
        assert (st.status, st.failures, st.successes) == (replay.status, replay.failures, replay.successes)


def test_a_batch_is_redacted_as_one_result_is(store):
    register_secret("Zq8Q~batchSecretValue1234567890")
    items = [Pending("i0", "pop", Outcome(Status.FAIL, "auth_failed", f"refused Zq8Q~batchSecretValue1234567890 #{n}",
                                          raw="S: Zq8Q~batchSecretValue1234567890"), T0 + timedelta(minutes=n),
                     THRESHOLDS[0]) for n in range(3)]
    for r in store.checks.record_results(items):
        assert "batchSecret" not in r.result.summary + r.result.raw and MASK in r.result.summary
    assert all("batchSecret" not in r.summary + (r.raw or "") for r in all_results(store))


# -- the pipeline's group writer ---------------------------------------------------------------------------------

class Recording:
    """A write function that records the batches it was given; holds the first write until ``release`` (the results
    taken meanwhile wait for it), and fails as told."""

    def __init__(self, store, fail=None, hold=False):
        self.store, self.batches, self.fail = store, [], fail
        self.started, self.gate = threading.Event(), threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, items):
        self.batches.append([p.outcome.summary for p in items])
        self.started.set()
        self.gate.wait(10)
        if self.fail is not None:
            self.fail(items)
        return self.store.checks.record_results(items)

    async def while_held(self, writes):
        """Start the first write, and once it is running the others; then let it end."""
        first = asyncio.ensure_future(writes[0])
        await asyncio.to_thread(self.started.wait, 10)
        rest = [asyncio.ensure_future(w) for w in writes[1:]]
        await asyncio.sleep(0.05)
        self.gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)


def pending(n: int, summary: str | None = None) -> Pending:
    return Pending(f"i{n % 4}", "pop", Outcome(Status.OK, None, summary or f"r{n}"), T0 + timedelta(seconds=n),
                   THRESHOLDS[1])


async def test_results_taken_while_a_write_runs_go_together_in_order(store):
    write = Recording(store, hold=True)
    writer = GroupWriter(write)
    got = await write.while_held([writer.write(pending(n)) for n in range(25)])
    assert [r.result.summary for r in got] == [f"r{n}" for n in range(25)]  # each caller its own
    # the first alone (nothing was writing), the 24 taken meanwhile in the next transaction
    assert [len(b) for b in write.batches] == [1, 24]
    assert [s for b in write.batches for s in b] == [f"r{n}" for n in range(25)]
    assert store.count(CheckResult) == 25


async def test_results_in_quick_succession_share_a_transaction_and_one_after_a_quiet_spell_goes_at_once(
        store, monkeypatch):
    monkeypatch.setattr(GroupWriter, "SPACING_S", 0.5)
    loop = asyncio.get_running_loop()
    write = Recording(store)
    writer = GroupWriter(write)
    await writer.write(pending(0))  # nothing written before: at once
    first = asyncio.ensure_future(writer.write(pending(1)))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(writer.write(pending(2)))
    await asyncio.gather(first, second)
    assert [len(b) for b in write.batches] == [1, 2]  # within the spacing of the first write: together
    await asyncio.sleep(0.6)
    started = loop.time()
    await writer.write(pending(3))
    assert loop.time() - started < 0.4  # after a quiet spell: not held back
    assert [len(b) for b in write.batches] == [1, 2, 1]


async def test_at_most_most_results_a_transaction(store, monkeypatch):
    monkeypatch.setattr(GroupWriter, "MOST", 10)
    write = Recording(store, hold=True)
    writer = GroupWriter(write)
    await write.while_held([writer.write(pending(n)) for n in range(32)])
    assert [len(b) for b in write.batches] == [1, 10, 10, 10, 1]


async def test_a_storage_outage_fails_every_waiting_result_at_once(store):
    def down(items):
        raise StorageError("database failed: connection refused")

    write = Recording(store, fail=down, hold=True)
    writer = GroupWriter(write)
    got = await write.while_held([writer.write(pending(n)) for n in range(12)])
    assert all(isinstance(g, StorageError) for g in got)
    assert len(write.batches) == 1  # the 11 waiting fail with the first: not one connect timeout each
    assert store.count(CheckResult) == 0
    # the next result is tried again
    write.fail = None
    assert (await writer.write(pending(20))).result.summary == "r20"


async def test_a_result_the_database_refuses_fails_alone(store):
    def refuse_poison(items):
        if any(p.outcome.summary == "poison" for p in items):
            raise ValueError("refused")

    writer = GroupWriter(Recording(store, fail=refuse_poison))
    got = await asyncio.gather(*(writer.write(pending(n, "poison" if n == 5 else None)) for n in range(9)),
                               return_exceptions=True)
    assert [type(g).__name__ for g in got] == ["Recorded"] * 5 + ["ValueError"] + ["Recorded"] * 3
    assert sorted(r.summary for r in all_results(store)) == sorted(f"r{n}" for n in range(9) if n != 5)


async def test_a_cancelled_caller_s_result_is_stored_all_the_same(store):
    writer = GroupWriter(Recording(store))
    first = asyncio.ensure_future(writer.write(pending(0)))
    second = asyncio.ensure_future(writer.write(pending(1)))
    await asyncio.sleep(0)
    second.cancel()
    await first
    await asyncio.sleep(0.2)
    assert sorted(r.summary for r in all_results(store)) == ["r0", "r1"]


async def test_the_pipeline_writes_through_the_group_writer(store):
    pipeline = ResultPipeline(store)
    batches = []
    real = pipeline.record_results

    def spy(items):
        batches.append(len(items))
        return real(items)

    pipeline._writer._write = spy
    from mailwarden.monitor.runner import RunResult

    results = await asyncio.gather(*(pipeline.record(RunResult(f"i{n}", "token", Outcome(
        Status.FAIL if n % 2 else Status.OK, "x" if n % 2 else None, f"s{n}"), T0, None, None), THRESHOLDS[0])
        for n in range(8)))
    assert batches == [8]  # taken together: one transaction
    assert [(r.result.summary, r.transition.to_status) for r in results] == \
        [(f"s{n}", "fail" if n % 2 else "ok") for n in range(8)]
    assert store.count(Transition) == 8


def test_the_returned_rows_are_the_stored_ones(store):
    """What a write returns (built without the models' constructors) reads as the rows read back from the database."""
    got = store.checks.record_results(sequence(3, 12))
    back = {r.id: r for r in all_results(store)}
    for r in got:
        assert r.result.model_dump() == back[r.result.id].model_dump()
    transitions = {t.id: t for t in store.checks.transitions(limit=100)}
    for r in got:
        if r.transition is not None:
            assert r.transition.model_dump() == transitions[r.transition.id].model_dump()
    st = store.checks.get_state(got[-1].result.integration, got[-1].result.check)
    assert st.last_result_id == max(r.result.id for r in got if (r.result.integration, r.result.check) ==
                                    (got[-1].result.integration, got[-1].result.check))


# -- what the database refuses -------------------------------------------------------------------------------------

def broken(n: int) -> Pending:
    """A result the database itself refuses (checked_at is NOT NULL)."""
    item = pending(n, "refused")
    item.checked_at = None  # type: ignore[assignment]
    return item


async def test_a_row_the_database_refuses_fails_alone_and_the_others_are_stored(store):
    write = Recording(store, hold=True)
    writer = GroupWriter(write)
    got = await write.while_held([writer.write(broken(0) if n == 4 else pending(n)) for n in range(1, 9)])
    refused = [g for g in got if isinstance(g, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], StorageError) and refused[0].kind == "refused"
    assert sorted(r.summary for r in all_results(store)) == sorted(f"r{n}" for n in range(1, 9) if n != 4)


async def test_the_pipeline_logs_a_refused_result_and_does_not_buffer_it(store, caplog):
    from mailwarden.monitor.buffer import ResultBuffer
    from mailwarden.monitor.runner import RunResult

    pipeline = ResultPipeline(store)
    pipeline.buffer = ResultBuffer()
    out = await pipeline.record(RunResult("i0", "pop", Outcome(Status.OK, None, "x"), None, None, None),  # type: ignore[arg-type]
                                THRESHOLDS[0])
    assert out.result is None and len(pipeline.buffer) == 0 and not pipeline.buffer.outage
    assert "result not stored" in [r.getMessage() for r in caplog.records]
    ok = await pipeline.record(RunResult("i0", "pop", Outcome(Status.OK, None, "y"), T0, None, None), THRESHOLDS[0])
    assert ok.result is not None and ok.result.summary == "y"


def test_a_buffered_result_the_database_refuses_does_not_stop_the_flush(store):
    from mailwarden.monitor.buffer import ResultBuffer

    buffer = ResultBuffer()
    buffer.unavailable("down")
    buffer.add(pending(1))
    buffer.add(broken(2))
    buffer.add(pending(3))
    written, _ = buffer.flush(ResultPipeline(store))
    assert written == 2 and len(buffer) == 0
    assert sorted(r.summary for r in all_results(store)) == ["r1", "r3"]


def test_a_nul_in_a_server_reply_is_stored_shown_as_an_escape(store):
    """PostgreSQL's text columns refuse a NUL character; a hostile or broken server may send one."""
    [r] = store.checks.record_results([Pending("i0", "imap", Outcome(
        Status.FAIL, "unexpected_reply", "reply \x00 here", raw="S: * BAD \x00\x00", transcript=["S: a\x00b"]),
        T0, THRESHOLDS[0])])
    [back] = all_results(store)
    assert back.summary == r.result.summary == "reply \\x00 here"
    assert back.raw == "S: * BAD \\x00\\x00" and back.transcript == "S: a\\x00b"


def test_a_conflict_between_two_writers_is_written_again(store, monkeypatch):
    """A deadlock or serialization failure rolls one writer's transaction back: it is tried again, up to three
    times, then reported."""
    real, calls = store.checks._record_rows, []

    def conflicting(items, rows, in_transaction):
        calls.append(len(items))
        if len(calls) < 3:
            raise StorageError("database failed: deadlock detected", kind="conflict")
        return real(items, rows, in_transaction)

    monkeypatch.setattr(store.checks, "_record_rows", conflicting)
    assert [r.result.summary for r in store.checks.record_results([pending(1), pending(2)])] == ["r1", "r2"]
    assert calls == [2, 2, 2]
    calls.clear()
    monkeypatch.setattr(store.checks, "_record_rows", lambda *a: (calls.append(1), (_ for _ in ()).throw(
        StorageError("database failed: deadlock detected", kind="conflict")))[1])
    with pytest.raises(StorageError):
        store.checks.record_results([pending(3)])
    assert len(calls) == 3
