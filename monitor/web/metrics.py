"""Prometheus /metrics (prometheus-client exposition format).

Store-backed values are read at scrape time by a collector (the store is the truth, and several
processes may share it); durations are observed in-process as checks finish (``observe``). The
scheduler has no cycles (one job per check on its own interval), so "cycle duration" is the per-check
duration histogram plus the age of the newest result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

STATUSES = ("ok", "warn", "fail", "error", "blocked")


class StoreCollector(Collector):
    def __init__(self, config: Callable[[], Any], store: Callable[[], Any]):
        self._config, self._store = config, store

    def collect(self):
        store, now = self._store(), datetime.now(UTC)
        status = GaugeMetricFamily("mailwarden_check_status", "1 for the status of the latest result of a check",
                                   labels=["integration", "check", "status"])
        up = GaugeMetricFamily("mailwarden_check_up", "1 when the latest result is ok or warn, else 0",
                               labels=["integration", "check"])
        latency = GaugeMetricFamily("mailwarden_check_latency_seconds", "latency of the latest result",
                                    labels=["integration", "check"])
        last = GaugeMetricFamily("mailwarden_check_last_run_timestamp_seconds", "when the latest result was taken",
                                 labels=["integration", "check"])
        latest = {(r.integration, r.check): r for r in store.checks.latest_results()}
        newest = None
        for st in store.checks.states():
            if not st.last_status:
                continue
            for s in STATUSES:
                status.add_metric([st.integration, st.check, s], 1.0 if st.last_status == s else 0.0)
            up.add_metric([st.integration, st.check], 1.0 if st.last_status in ("ok", "warn") else 0.0)
            r = latest.get((st.integration, st.check))
            if r is not None and r.latency_ms is not None:
                latency.add_metric([st.integration, st.check], r.latency_ms / 1000)
            if st.last_checked_at:
                last.add_metric([st.integration, st.check], st.last_checked_at.timestamp())
                newest = max(newest or st.last_checked_at, st.last_checked_at)
        yield from (status, up, latency, last)
        age = GaugeMetricFamily("mailwarden_newest_result_age_seconds",
                                "age of the newest stored result (a stalled monitor grows this)")
        if newest is not None:
            age.add_metric([], (now - newest).total_seconds())
        yield age
        expiry = GaugeMetricFamily("mailwarden_credential_expiry_seconds",
                                   "seconds until the credential expires (negative: expired)",
                                   labels=["tenant", "app", "client_id", "kind", "key_id"])
        for c in store.inventory.credentials():
            if c.expires_at is not None:
                expiry.add_metric([c.tenant, c.app, c.client_id, c.kind, c.key_id or ""],
                                  (c.expires_at - now).total_seconds())
        yield expiry
        sent = CounterMetricFamily("mailwarden_notifications", "notification send attempts",
                                   labels=["route", "kind", "ok"])
        failed = CounterMetricFamily("mailwarden_notification_failures", "failed notification send attempts",
                                     labels=["route", "kind"])
        counts: dict[tuple[str, str, bool], int] = {}
        for n in store.alerts.notifications():
            counts[(n.route, n.kind, n.ok)] = counts.get((n.route, n.kind, n.ok), 0) + 1
        fails: dict[tuple[str, str], int] = {}
        for (route, kind, ok), v in sorted(counts.items()):
            sent.add_metric([route, kind, str(ok).lower()], v)
            if not ok:
                fails[(route, kind)] = fails.get((route, kind), 0) + v
        for (route, kind), v in sorted(fails.items()):
            failed.add_metric([route, kind], v)
        yield from (sent, failed)
        incidents = GaugeMetricFamily("mailwarden_open_incidents", "open incidents")
        incidents.add_metric([], len(store.alerts.incidents("open")))
        yield incidents
        yield self._availability(store, now)
        cfg = self._config()
        if cfg.execution.mode == "queue":
            yield from self._queue(store, float(cfg.execution.queue.stalled_after))

    @staticmethod
    def _queue(store: Any, stalled_after: float) -> list[GaugeMetricFamily]:
        """Queue mode: the checks queue as every instance sees it (one database)."""
        from mailwarden.monitor.due import read_stats

        q = read_stats(store.engine, stalled_after)
        jobs = GaugeMetricFamily("mailwarden_queue_jobs", "check jobs in the queue: ready (due now), scheduled "
                                 "(due later), running", labels=["queue", "state"])
        for state, n in (("ready", q.ready), ("scheduled", q.scheduled), ("running", q.running)):
            jobs.add_metric(["checks", state], n)
        lag = GaugeMetricFamily("mailwarden_queue_oldest_ready_seconds",
                                "how long the oldest ready check job has been due (0: none waits): the queue's lag",
                                labels=["queue"])
        lag.add_metric(["checks"], q.oldest_ready_s or 0.0)
        workers = GaugeMetricFamily("mailwarden_queue_workers_live",
                                    "workers whose last heartbeat is younger than execution.queue.stalled_after")
        workers.add_metric([], q.workers_live)
        return [jobs, lag, workers]

    @staticmethod
    def _availability(store: Any, now: datetime) -> GaugeMetricFamily:
        """The pages' and the API's availability (same rollups, same windows), as a ratio; no sample for a window
        in which no time is known."""
        from mailwarden.monitor.web.svg import window_starts

        gauge = GaugeMetricFamily(
            "mailwarden_integration_availability_ratio",
            "share of the window in which all the integration's checks were good (ok or warn) after the thresholds; "
            "paused, maintenance and not-yet-checked time left out",
            labels=["integration", "window"])
        windows = window_starts(now)
        names = [row.name for row in store.history.integration_rows()]
        sums = store.history.availability_sums([w.start for w in windows], until=windows[0].start + timedelta(hours=24))
        for name in names:
            for w, (up, down) in zip(windows, sums.get(name, [(0, 0)] * len(windows)), strict=True):
                if up + down:
                    gauge.add_metric([name, w.key], up / (up + down))
        return gauge


class Metrics:
    def __init__(self, config: Callable[[], Any], store: Callable[[], Any]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(config, store))
        self.check_duration = Histogram("mailwarden_check_duration_seconds", "how long checks took in this process",
                                        ["check", "status"], registry=self.registry,
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    def observe(self, result: Any) -> None:
        """Monitor.on_result hook."""
        o = result.outcome
        if o.latency_ms is not None:
            self.check_duration.labels(result.check, o.status.value).observe(o.latency_ms / 1000)

    def render(self) -> tuple[bytes, str]:
        """The exposition; the collector reads the store (blocking): the web app calls it in a worker thread."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
