"""What the leader puts on the job queue in queue mode (``monitor.queue``) and what it and the web app read of it,
without importing the queue's library: the scheduler and the web app import this in local mode too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

QUEUE = "checks"
TASK = "mailwarden.check"
TOKEN_PRIORITY = 10  # a token check is fetched before the mailbox checks that depend on it


def pair_key(integration: str, check: str) -> str:
    """The queueing lock of a check's jobs (at most one waits): the same key as its job in the leader's schedule."""
    return f"{integration}::{check}"


@dataclass(frozen=True)
class Due:
    """One check due at ``due_at``: what the leader enqueues."""

    integration: str
    check: str
    due_at: datetime
    priority: int = 0
    at: datetime | None = None  # not before (a re-check in a few seconds); None: at once

    def args(self) -> str:
        return json.dumps({"integration": self.integration, "check": self.check, "due_at": self.due_at.isoformat()})


@dataclass(frozen=True)
class QueueStats:
    """The checks queue as the leader and the dashboard read it (PostgreSQL, schema ``procrastinate``)."""

    ready: int  # waiting, due now
    scheduled: int  # waiting, due later (a re-check in a few seconds)
    running: int
    oldest_ready_s: float | None  # how long the oldest ready job has been due: the queue's lag (None: none waits)
    workers_live: int  # workers whose last heartbeat is younger than stalled_after


# Workers whose last heartbeat is younger than stalled_after: the ones taking jobs (the footer's and /metrics' count,
# and the leader's watch for none: monitor.queue). Schema-qualified: it runs on either connection.
LIVE_WORKERS = """(SELECT count(*) FROM procrastinate.procrastinate_workers
         WHERE last_heartbeat > now() - make_interval(secs => %(stalled)s))"""

# Schema-qualified: read through mailwarden's own connection (the store's engine), whose search_path is the default.
_STATS = f"""
SELECT count(*) FILTER (WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())) AS ready,
       count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled,
       count(*) FILTER (WHERE status = 'doing') AS running,
       EXTRACT(EPOCH FROM now() - min(COALESCE(scheduled_at, (args->>'due_at')::timestamptz))
               FILTER (WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())))::float
           AS oldest_ready_s,
       {LIVE_WORKERS} AS workers_live
  FROM procrastinate.procrastinate_jobs WHERE queue_name = %(queue)s AND status IN ('todo', 'doing')
"""  # noqa: S608 - LIVE_WORKERS is a constant of this module, no input


def read_stats(engine: Any, stalled_after: float) -> QueueStats:
    """The queue's figures now (blocking: call it off the event loop). Raises SQLAlchemy's errors as they come."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(_STATS, {"queue": QUEUE, "stalled": float(stalled_after)}).mappings().one()
    oldest = row["oldest_ready_s"]
    return QueueStats(int(row["ready"]), int(row["scheduled"]), int(row["running"]),
                      None if oldest is None else max(0.0, float(oldest)), int(row["workers_live"]))


# What the planner believes of the jobs table (pg_class.reltuples: rows at the last ANALYZE, -1 never) against what it
# holds (the statistics collector's live rows).
_PLANNED = """
SELECT c.reltuples::bigint AS planned, COALESCE(s.n_live_tup, 0) AS live
  FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.oid = 'procrastinate.procrastinate_jobs'::regclass
"""
STALE_MIN_ROWS = 1000  # below this a fetch is quick whatever the plan


def refresh_planner_stats(engine: Any) -> tuple[int, int, int] | None:
    """ANALYZE the jobs table when it holds more than twice the rows the planner believes (and over
    ``STALE_MIN_ROWS``); (rows believed before, rows held, rows believed after) when it tried, None when the statistics
    were fresh enough. Believed after equal to before: the ANALYZE did nothing (PostgreSQL only warns when the
    database user does not own the table). Blocking.

    A cycle's burst fills the table in seconds (34,000 jobs at 10,000 integrations). Planned as nearly empty, a
    worker's job fetch (``procrastinate_fetch_job_v2``) read and sorted every waiting job instead of walking its
    priority index: 79 ms a fetch instead of 2, and the workers ran about 3 checks at once instead of 50 (bench/).
    Autovacuum's own ANALYZE comes a minute or more later, or never where autovacuum is off."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(_PLANNED).mappings().one()
        planned, live = max(int(row["planned"]), 0), int(row["live"])
        if live <= max(STALE_MIN_ROWS, 2 * planned):
            return None
        conn.exec_driver_sql("ANALYZE procrastinate.procrastinate_jobs")
        conn.commit()
        after = max(int(conn.exec_driver_sql(_PLANNED).mappings().one()["planned"]), 0)
    return planned, live, after
