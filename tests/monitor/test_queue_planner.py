"""The jobs table's planner statistics after a burst (issue 20, item 6; bench/RESULTS.md): a cycle fills the table
in seconds, and planned as nearly empty a worker's job fetch read and sorted every waiting job (79 ms a fetch at
30,000 jobs, about 3 checks at once per worker) instead of walking the priority index. The leader refreshes them
(``monitor.due.refresh_planner_stats``, every heartbeat)."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailwarden.monitor.db import open_store
from mailwarden.monitor.due import QUEUE, STALE_MIN_ROWS, TASK, TOKEN_PRIORITY, refresh_planner_stats
from tests.pg import fresh_database

pytestmark = pytest.mark.postgres

# the candidate query of procrastinate_fetch_job_v2 (procrastinate 3.10's schema), as the worker runs it
FETCH_PLAN = """
EXPLAIN SELECT jobs.id FROM procrastinate.procrastinate_jobs AS jobs
 WHERE NOT EXISTS (SELECT 1 FROM procrastinate.procrastinate_jobs AS other_jobs
                    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
                      AND (other_jobs.status = 'doing' OR (other_jobs.status = 'todo'
                           AND (other_jobs.priority > jobs.priority
                                OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)))))
   AND jobs.status = 'todo' AND jobs.queue_name = ANY(ARRAY['checks'])
   AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
 ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1 FOR UPDATE OF jobs SKIP LOCKED
"""


def _burst(url: str, jobs: int) -> None:
    """A cycle's due checks, enqueued at once (a tenth of them token checks, fetched first)."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, options="-c search_path=procrastinate") as conn:
        conn.execute("INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args) "
                     "SELECT %s, %s, CASE WHEN i %% 10 = 0 THEN %s ELSE 0 END, 'i' || i || '::check', "
                     "jsonb_build_object('integration', 'i' || i) FROM generate_series(1, %s) AS i",
                     (QUEUE, TASK, TOKEN_PRIORITY, jobs))


def _plan(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(conn.execute(text(FETCH_PLAN)).scalars())


def test_a_burst_of_jobs_gets_its_statistics_and_the_fetch_walks_the_priority_index():
    with fresh_database("mw_queue_planner") as url:
        store = open_store(url)
        try:
            assert refresh_planner_stats(store.engine) is None  # empty: nothing to refresh
            _burst(url, 20 * STALE_MIN_ROWS)
            deadline = time.monotonic() + 15
            while True:  # the statistics collector counts the rows a moment after the inserting session ends
                analyzed = refresh_planner_stats(store.engine)
                if analyzed is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert analyzed is not None and analyzed[0] == 0 and min(analyzed[1:]) >= 19 * STALE_MIN_ROWS
            plan = _plan(store.engine)  # the next job read off the index, not every waiting job read and sorted
            assert "Index Scan using procrastinate_jobs_priority_idx_v1" in plan and "Sort" not in plan, plan
            assert refresh_planner_stats(store.engine) is None  # fresh now: not analysed again every heartbeat
        finally:
            store.close()


def test_a_small_queue_is_left_to_autovacuum():
    with fresh_database("mw_queue_planner_small") as url:
        store = open_store(url)
        try:
            _burst(url, STALE_MIN_ROWS // 2)
            time.sleep(1.5)
            assert refresh_planner_stats(store.engine) is None
        finally:
            store.close()
