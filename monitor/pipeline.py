"""What happens to a check's result, whoever ran the check: the scheduler, the dashboard's "Re-run now", `mailwarden
check`, the re-authorisation page (each through ``Runner.run_one``).

``ResultPipeline.record(result)``:

1. One transaction (``store.checks.record_result``): store the CheckResult, fold it into the check's state (the pure
   state machine, ``mailwarden.state``), record a Transition only when the state changes, and last, still inside it, the
   reauthorisation rule (``ReauthRequests``: open a request on a failure that needs a sign-in, close it on the first
   good token result after a bad one). The rule stays in the transaction because two promises of the README
   ("Reauthorisation") would break if a crash lost it: the alert about the failure carries the request's link (the
   dispatcher may fold the transition as soon as it is committed, so the request must be there by then), and the
   link stops working once the next token check is good again (the close depends on the previous result's status,
   which the commit overwrites: a lost close would leave the link working for its whole lifetime).
2. After the commit, the subscribers in the order they subscribed; the scheduler subscribes "dispatch soon" (after a
   transition), then the metrics hook (``Monitor.on_result``: the check-duration histogram, the demo's table).
   A subscriber that fails is logged; the result stays stored and the others still run.

While the database cannot be written (``monitor.buffer``, set by a serving Monitor with ``buffer``/``writable``),
results wait in the buffer in the order they were taken, and the buffer writes them through ``record_result`` here
(the same transaction, reauthorisation rule included) when the database returns; the Monitor dispatches after that
flush. The subscribers run for a buffered result too (it was taken: it counts in the metrics), with no transition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailwarden.checks import TOKEN_KIND, diagnoses
from mailwarden.errors import MailwardenError, StorageError
from mailwarden.monitor.buffer import ResultBuffer
from mailwarden.monitor.db import Pending

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Recorded, Store
    from mailwarden.monitor.runner import RunResult
    from mailwarden.state import Thresholds

log = logging.getLogger("mailwarden.runner")
GOOD = ("ok", "warn")
BAD = ("fail", "error")
TOKEN = TOKEN_KIND

Subscriber = Callable[["RunResult"], None]


class ReauthRequests:
    """The reauthorisation rule of a result, applied inside the transaction that records it: a failure whose
    diagnosis needs a person to sign in again (``needs_reauth``) opens the integration's request (a delegated one's;
    the open one is kept), and the first good token result after a result that was not good closes it. Costs nothing
    on the usual path (a good result after a good one)."""

    def __init__(self, store: Store):
        self.store = store

    def __call__(self, conn: Any, recorded: Recorded) -> None:
        r = recorded.result
        if r.code is not None and r.status in BAD and diagnoses.get(r.code).needs_reauth:
            self.store.reauth.open_reauth_in(conn, r.integration, r.code, r.checked_at)
        elif r.check == TOKEN and r.status in GOOD and recorded.previous not in GOOD:
            self.store.reauth.close_reauth_in(conn, r.integration, "token_ok", r.checked_at)


class GroupWriter:
    """Results are written together: the results taken while a write runs, or within ``SPACING_S`` of the last write's
    start, wait and are written next in one transaction, one thread hop and one statement per kind of row for them
    all (``store.checks.record_results``), in the order they were taken. Storing a result cost 0.73 ms of CPU alone,
    0.30 ms at 10 a transaction and 0.22 ms at 50 (bench/); a mailbox check's runner, storing and log line together
    1.7 -> 0.85 ms with the spacing. A result is stored at most SPACING_S later than alone. Each caller gets its own
    result's fate: while the database is unavailable every result then waiting fails with the same StorageError (each
    would wait for its own connect timeout; the caller buffers it), and a result the database refuses for itself fails
    alone (the others of its transaction are then written one by one)."""

    MOST = 100  # results per transaction: the SQLite write lock is held for its length
    # while results keep coming, a transaction starts at most this often: the results of a busy moment are written
    # together (in service checks finish spread over their interval); a result after a quiet spell is written at once
    SPACING_S = 0.05

    def __init__(self, write: Callable[[list[Pending]], list[Recorded]]):
        self._write = write
        self._waiting: list[tuple[Pending, asyncio.Future[Recorded]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._started = float("-inf")  # when the last write started (loop time)

    async def write(self, item: Pending) -> Recorded:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        self._waiting.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Pending, asyncio.Future[Recorded]]] = []
        try:
            loop = asyncio.get_running_loop()
            while self._waiting:
                wait = self._started + self.SPACING_S - loop.time()
                if wait > 0 and len(self._waiting) < self.MOST:
                    await asyncio.sleep(wait)
                batch, self._waiting = self._waiting[:self.MOST], self._waiting[self.MOST:]
                self._started = loop.time()
                await self._write_batch(batch)
                batch = []
        finally:  # cancelled with its loop, or a fault here: no caller waits for ever
            for _, future in batch:
                future.cancel()

    async def _write_batch(self, batch: list[tuple[Pending, asyncio.Future[Recorded]]]) -> None:
        try:
            recorded = await asyncio.to_thread(self._write, [item for item, _ in batch])
        except StorageError as exc:
            if exc.kind != "unavailable" and len(batch) > 1:
                await self._one_by_one(batch)  # refused: one of them; or a conflict that outlasted the retries
                return
            if exc.kind == "unavailable":  # every result waiting now would fail the same way
                batch += self._waiting
                self._waiting = []
            for _, future in batch:
                _settle(future, exc=exc)
            return
        except Exception:  # noqa: BLE001 - one result refused: each alone, so only its own caller hears of it
            await self._one_by_one(batch)
            return
        for (_, future), one in zip(batch, recorded, strict=True):
            _settle(future, one)

    async def _one_by_one(self, batch: list[tuple[Pending, asyncio.Future[Recorded]]]) -> None:
        """Each result of ``batch`` alone, so only the caller of a refused one hears of it; the database gone
        meanwhile fails the rest at once."""
        for n, (item, future) in enumerate(batch):
            try:
                [alone] = await asyncio.to_thread(self._write, [item])
            except StorageError as exc:
                if exc.kind == "unavailable":
                    for _, rest in batch[n:]:
                        _settle(rest, exc=exc)
                    return
                _settle(future, exc=exc)
            except Exception as exc:  # noqa: BLE001 - its caller's to handle
                _settle(future, exc=exc)
            else:
                _settle(future, alone)


def _settle(future: asyncio.Future[Recorded], result: Recorded | None = None, *, exc: BaseException | None = None
            ) -> None:
    if future.done():  # its caller was cancelled; the result is stored all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class ResultPipeline:
    def __init__(self, store: Store):
        self.store = store
        self.reauth = ReauthRequests(store)
        self._subscribers: list[Subscriber] = []
        # Set by a serving Monitor (monitor.buffer, monitor.leader): results that cannot be written now wait in
        # the buffer; ``writable`` is False while this instance must re-take its leadership lease first.
        self.buffer: ResultBuffer | None = None
        self.writable: Callable[[], bool] = lambda: True
        self._writer = GroupWriter(self.record_results)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(result)`` after each result, after those subscribed before it; once, however often
        subscribed."""
        if subscriber not in self._subscribers:
            self._subscribers.append(subscriber)

    async def record(self, result: RunResult, thresholds: Thresholds) -> RunResult:
        """Store ``result`` (or buffer it), then tell the subscribers. Fills ``result.result`` and
        ``result.transition`` when it was stored; never raises for the database (logged, or buffered)."""
        item = Pending(result.integration, result.check, result.outcome, result.checked_at, thresholds)
        buffer = self.buffer
        if buffer is not None and (len(buffer) or not self.writable()):
            buffer.add(item)  # behind the older ones, in order
        else:
            try:
                recorded = await self._writer.write(item)
                result.result, result.transition = recorded.result, recorded.transition
            except StorageError as exc:
                if buffer is None or exc.kind == "refused":  # a refused row would stop the buffer's every flush
                    log.error("result not stored", extra={"integration": result.integration, "check": result.check,
                                                          "error": exc.message()})
                else:
                    buffer.unavailable(exc.message())
                    buffer.add(item)
            except MailwardenError as exc:
                log.error("result not stored", extra={"integration": result.integration, "check": result.check,
                                                      "error": exc.message()})
        for subscriber in list(self._subscribers):
            try:
                subscriber(result)
            except Exception:  # noqa: BLE001 - the result is stored; one subscriber must not stop the others
                log.exception("result subscriber failed", extra={"integration": result.integration,
                                                                 "check": result.check})
        return result

    # -- what the buffer writes through (monitor.buffer.ResultBuffer.flush) ------------------------------
    def record_result(self, *, integration: str, check: str, outcome: Any, checked_at: Any,
                      thresholds: Thresholds) -> Recorded:
        """Step 1 alone (blocking): the result, its state, its transition and its reauthorisation request."""
        return self.store.checks.record_result(integration=integration, check=check, outcome=outcome,
                                               checked_at=checked_at, thresholds=thresholds, in_transaction=self.reauth)

    def record_results(self, items: list[Pending]) -> list[Recorded]:
        """Step 1 for several results, in one transaction (the group writer's)."""
        return self.store.checks.record_results(items, in_transaction=self.reauth)

    @property
    def engine(self) -> Any:
        """The store's engine: the buffer probes it before writing after an outage."""
        return self.store.engine
