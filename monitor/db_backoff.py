"""The shared back-off table's repository (``store.backoff``, ``monitor.db``).

In queue mode every worker must honour a wait that another one heard (a Retry-After of the token endpoint, Graph's
or a mail server's "back off"), so ``monitor.backoff.SharedBackoff`` writes each wait here and reads the waits of
the targets it is about to touch. One row per target; a write never shortens a wait already stored (the later
``until`` wins, in the upsert itself, so two workers writing at once cannot shorten it either). Expired rows are
ignored by reads and deleted by ``prune``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailwarden.monitor.backoff import Wait
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import BackoffWait, table_of
from mailwarden.redact import redact

_WAITS = table_of(BackoffWait)


class BackoffRepository(Repository):
    """Where servers asked mailwarden to wait, per target (``store.backoff``)."""

    def defer(self, target: str, wait: Wait) -> None:
        """Store ``wait`` for ``target`` unless a later ``until`` is stored already."""
        values = {"until": wait.until, "status": wait.status, "code": wait.code, "why": redact(wait.why)}
        stmt = self._insert()(BackoffWait).values(target=target, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["target"], set_={k: stmt.excluded[k] for k in values},
                                          where=_WAITS.c.until < stmt.excluded.until)
        with self._connection(write=True) as conn:
            conn.execute(stmt)

    def waits(self, targets: Sequence[str], now: datetime) -> dict[str, Wait]:
        """The waits of ``targets`` still running at ``now`` (other targets and expired waits are left out)."""
        wanted = list(dict.fromkeys(targets))
        if not wanted:
            return {}
        stmt = _WAITS.select().where(_WAITS.c.target.in_(wanted), _WAITS.c.until > now)
        with self._connection() as conn:
            rows = conn.execute(stmt).all()
        return {r.target: Wait(r.until, r.status, r.code, r.why) for r in rows}

    def prune(self, now: datetime) -> int:
        """Delete the waits over at ``now``; how many."""
        with self._connection(write=True) as conn:
            return int(conn.execute(_WAITS.delete().where(_WAITS.c.until <= now)).rowcount)
