"""The sign-in evidence tables' repository (``store.signins``, ``monitor.db``), and the recorder of
mailwarden's own token requests that the token provider's HTTP session calls.

What is stored and why is in ``monitor.models`` (OwnTokenRequest, ReauthWindow, SignInRecord, SignInPoll); how it
is read and labelled is ``monitor.signins``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, update
from sqlmodel import col, select

from mailwarden.checks.replies import TokenRequest
from mailwarden.errors import StorageError
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import (
    DirectoryAuditRecord,
    OwnTokenRequest,
    ReauthWindow,
    SignInPoll,
    SignInRecord,
    table_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Database, MetaRepository, Store

log = logging.getLogger("mailwarden.signins")

RECORDED_FROM = "signins.recorded_from"  # meta: since when own token requests are recorded (migration 0010)
OWN_KEEP = timedelta(hours=72)  # own token requests: logs arrive hours late at worst; matched for at least 48 h
WINDOW_MARGIN = timedelta(minutes=2)  # Entra's clock against ours, around a reauthorisation window
USER_EVENTS = ("interactiveUser", "nonInteractiveUser")
_CHUNK = 500  # ids per IN (...) list
_OWN, _SIGNINS, _WINDOWS = table_of(OwnTokenRequest), table_of(SignInRecord), table_of(ReauthWindow)
_AUDITS = table_of(DirectoryAuditRecord)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class SignInRepository(Repository):
    """The sign-in evidence: own token requests, reauthorisation windows, sign-ins, directory audits, poll marks
    (``store.signins``); reads ``meta`` (since when own requests are recorded)."""

    def __init__(self, db: Database, meta: MetaRepository) -> None:
        super().__init__(db)
        self.meta = meta

    # -- mailwarden's own token requests -------------------------------------------------------------
    def record_own_requests(self, requests: Sequence[TokenRequest]) -> None:
        """Insert (once per correlation id) what ``checks.replies.record_token_requests`` saw."""
        if not requests:
            return
        rows = [{"correlation_id": r.correlation_id, "tenant": r.tenant, "client_id": r.client_id, "at": r.at,
                 "generated": r.generated} for r in requests]
        with self._connection(write=True) as conn:
            conn.execute(self._insert()(OwnTokenRequest).values(rows)
                         .on_conflict_do_nothing(index_elements=["correlation_id"]))

    def own_correlation_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are correlation ids of mailwarden's own token requests."""
        return self._present(_OWN.c.correlation_id, ids)

    def recorded_from(self) -> datetime | None:
        """Since when mailwarden's own token requests are recorded: sign-ins from before cannot be told apart."""
        value = self.meta.get_meta(RECORDED_FROM)
        return datetime.fromisoformat(value) if value else None

    def prune_own_requests(self, now: datetime, keep: timedelta = OWN_KEEP) -> int:
        with self._connection(write=True) as conn:
            return conn.execute(delete(_OWN).where(_OWN.c.at < now - keep)).rowcount or 0

    def own_requests(self, since: datetime | None = None) -> list[OwnTokenRequest]:
        stmt = select(OwnTokenRequest).order_by(col(OwnTokenRequest.at), col(OwnTokenRequest.id))
        if since is not None:
            stmt = stmt.where(OwnTokenRequest.at >= since)
        with self._session() as s:
            return list(s.exec(stmt))

    # -- reauthorisation windows --------------------------------------------------------------------
    def open_reauth_window(self, *, integration: str, tenant_id: str, client_id: str, account: str, source: str,
                           now: datetime, ttl: timedelta, attempt_id: int | None = None) -> int:
        """A reauthorisation sign-in starts: its window lasts until closed, or ``ttl`` when it never is."""
        with self._connection(write=True) as conn:
            return int(conn.execute(_WINDOWS.insert().returning(_WINDOWS.c.id), dict(
                attempt_id=attempt_id, integration=integration, tenant_id=tenant_id.lower(),
                client_id=client_id.lower(), account=account.lower(), source=source, started_at=now,
                ends_at=now + ttl)).scalar_one())

    def close_reauth_window(self, now: datetime, *, window_id: int | None = None,
                            attempt_id: int | None = None) -> None:
        """The sign-in came back (or failed): the window ends now, even past its first end (a slow person)."""
        if window_id is None and attempt_id is None:
            return
        where = _WINDOWS.c.id == window_id if window_id is not None else _WINDOWS.c.attempt_id == attempt_id
        with self._connection(write=True) as conn:
            conn.execute(update(_WINDOWS).where(where).values(ends_at=now))

    def reauth_windows(self, since: datetime) -> list[ReauthWindow]:
        """The windows that end at or after ``since``."""
        stmt = select(ReauthWindow).where(ReauthWindow.ends_at >= since).order_by(col(ReauthWindow.started_at))
        with self._session() as s:
            return list(s.exec(stmt))

    # -- sign-in events ------------------------------------------------------------------------------
    def save_signins(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the events not stored yet (by event id: a poll re-reads its overlap); how many were new."""
        return self._insert_new(SignInRecord, rows, "signin_id")

    def _insert_new(self, model: type[SignInRecord] | type[DirectoryAuditRecord], rows: Sequence[dict[str, Any]],
                    event_id: str) -> int:
        """Insert the rows whose ``event_id`` is not stored yet, in chunks; how many were new."""
        if not rows:
            return 0
        new = 0
        table = table_of(model)
        with self._connection(write=True) as conn:
            for chunk in _chunks(list(rows)):
                # RETURNING counts what was inserted on both backends (psycopg's rowcount here is -1)
                new += len(conn.execute(self._insert()(model).values(list(chunk))
                                        .on_conflict_do_nothing(index_elements=[event_id])
                                        .returning(table.c.id)).all())
        return new

    def stored_signin_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these event ids are stored already (a poll re-reads its overlap: those need no write)."""
        return self._present(_SIGNINS.c.signin_id, ids)

    def _present(self, column: Any, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in ``column`` (read in chunks: a poll may bring thousands)."""
        wanted = sorted({i for i in ids if i})
        found: set[str] = set()
        with self._connection() as conn:
            for chunk in _chunks(wanted):
                found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
        return found

    def relabel_signins(self, since: datetime, windows: Sequence[ReauthWindow]) -> int:
        """Label again the events created since ``since``: ``own`` where an own request with the correlation id
        has been recorded since (one kept in memory while the database was down), ``unconfirmed`` where a
        reauthorisation window covers a consumer event of its app and account. Returns the rows changed."""
        changed = 0
        with self._connection(write=True) as conn:
            own = select(_OWN.c.correlation_id)
            changed += conn.execute(update(_SIGNINS).where(
                _SIGNINS.c.created_at >= since, _SIGNINS.c.origin != "own",
                _SIGNINS.c.correlation_id.in_(own)).values(origin="own")).rowcount or 0
            for w in windows:
                changed += conn.execute(update(_SIGNINS).where(
                    _SIGNINS.c.origin == "consumer", _SIGNINS.c.app_id == w.client_id,
                    _SIGNINS.c.user_principal_name == w.account, _SIGNINS.c.event_type.in_(USER_EVENTS),
                    _SIGNINS.c.created_at >= w.started_at - WINDOW_MARGIN,
                    _SIGNINS.c.created_at <= w.ends_at + WINDOW_MARGIN).values(origin="unconfirmed")).rowcount or 0
        return changed

    def signins_of(self, tenant_id: str, app_id: str, event_types: Sequence[str], *, account: str | None = None,
                   since: datetime | None = None, origins: Sequence[str] | None = None,
                   limit: int = 1000) -> list[SignInRecord]:
        """An app's stored events of ``event_types`` (of ``account``, case-insensitively), newest first."""
        stmt = select(SignInRecord).where(SignInRecord.tenant_id == tenant_id.lower(),
                                          SignInRecord.app_id == app_id.lower(),
                                          col(SignInRecord.event_type).in_(list(event_types)))
        if account is not None:
            stmt = stmt.where(SignInRecord.user_principal_name == account.lower())
        if since is not None:
            stmt = stmt.where(SignInRecord.created_at >= since)
        if origins is not None:
            stmt = stmt.where(col(SignInRecord.origin).in_(list(origins)))
        stmt = stmt.order_by(col(SignInRecord.created_at).desc(), col(SignInRecord.id).desc()).limit(limit)
        with self._session() as s:
            return list(s.exec(stmt))

    # -- directory audits (monitor.audits) ------------------------------------------------------------
    def save_directory_audits(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the directory audit events not stored yet (by event id: a poll re-reads its overlap); how many
        were new."""
        return self._insert_new(DirectoryAuditRecord, rows, "audit_id")

    def stored_audit_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these directory audit event ids are stored already."""
        return self._present(_AUDITS.c.audit_id, ids)

    def directory_audits_of(self, tenant_ids: Sequence[str], app_id: str, changes: Sequence[str] | None = None,
                            since: datetime | None = None, until: datetime | None = None,
                            limit: int = 100) -> list[DirectoryAuditRecord]:
        """An app's stored directory changes in these tenants (of ``changes``, between ``since`` and ``until``),
        newest first."""
        tenants = [t.lower() for t in tenant_ids]
        stmt = select(DirectoryAuditRecord).where(col(DirectoryAuditRecord.tenant_id).in_(tenants),
                                                  DirectoryAuditRecord.app_id == app_id.lower())
        if changes is not None:
            stmt = stmt.where(col(DirectoryAuditRecord.change).in_(list(changes)))
        if since is not None:
            stmt = stmt.where(DirectoryAuditRecord.activity_at >= since)
        if until is not None:
            stmt = stmt.where(DirectoryAuditRecord.activity_at <= until)
        stmt = stmt.order_by(col(DirectoryAuditRecord.activity_at).desc(), col(DirectoryAuditRecord.id).desc())
        with self._session() as s:
            return list(s.exec(stmt.limit(limit)))

    # -- poll states ---------------------------------------------------------------------------------
    def signin_polls(self, tenant_id: str | None = None) -> dict[tuple[str, str, str], SignInPoll]:
        """(tenant id, event type, app id) -> where reading it stands."""
        stmt = select(SignInPoll)
        if tenant_id is not None:
            stmt = stmt.where(SignInPoll.tenant_id == tenant_id.lower())
        with self._session() as s:
            return {(p.tenant_id, p.event_type, p.app_id): p for p in s.exec(stmt)}

    def save_signin_polls(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert poll states by (tenant_id, event_type, app_id); the other columns as given."""
        if not rows:
            return
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:  # one statement per set of columns (an error row leaves the read cursor as it was)
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        with self._connection(write=True) as conn:
            for columns, same in shapes.items():
                stmt = self._insert()(SignInPoll)
                updated = {c: stmt.excluded[c] for c in columns if c not in ("tenant_id", "event_type", "app_id")}
                conn.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "event_type", "app_id"],
                                                        set_=updated), same)

    # -- retention -----------------------------------------------------------------------------------
    def prune_signin_evidence(self, now: datetime, keep: timedelta, own_keep: timedelta = OWN_KEEP) -> dict[str, int]:
        """Drop own requests older than ``own_keep`` and events and windows older than ``keep``; the poll states'
        coverage starts no earlier than what is kept."""
        oldest = now - keep
        own = self.prune_own_requests(now, own_keep)
        with self._connection(write=True) as conn:
            events = conn.execute(delete(_SIGNINS).where(_SIGNINS.c.created_at < oldest)).rowcount or 0
            windows = conn.execute(delete(_WINDOWS).where(_WINDOWS.c.ends_at < oldest)).rowcount or 0
            audits = conn.execute(delete(_AUDITS).where(_AUDITS.c.activity_at < oldest)).rowcount or 0
            polls = table_of(SignInPoll)
            conn.execute(update(polls).where(polls.c.covered_from < oldest).values(covered_from=oldest))
        return {"own_requests": own, "signins": events, "windows": windows, "directory_audits": audits}

    def count_signins(self, **where: Any) -> int:
        stmt = select(func.count()).select_from(SignInRecord)
        conds = [getattr(SignInRecord, k) == v for k, v in where.items()]
        if conds:
            stmt = stmt.where(and_(*conds))
        with self._session() as s:
            return int(s.exec(stmt).one())


class OwnRequestRecorder:
    """Called by the token provider's HTTP session for every token request, in the thread about to send it: the
    request is in the database before Entra ID can have logged it, so no poll can see the sign-in first and take it
    for the consuming system's. A request that cannot be written (the database is down) is kept in memory, matched
    from there meanwhile, and written with a later one or by the next poll (``flush``); while the database is down,
    token requests do not wait for it again before ``RETRY_S``."""

    PENDING_MAX = 20_000
    RETRY_S = 30.0
    PRUNE_S = 3600.0  # own requests past OWN_KEEP are dropped this often, whether or not sign-in logs are read

    def __init__(self, store: Store | None):
        self.store = store
        self._pending: deque[TokenRequest] = deque(maxlen=self.PENDING_MAX)
        self._lock = threading.Lock()
        self._retry_at = 0.0  # monotonic: no write is tried from a token request before then
        self._pruned_at: float | None = None  # monotonic

    def __call__(self, request: TokenRequest) -> None:
        with self._lock:
            self._pending.append(request)
            waiting = self.store is None or time.monotonic() < self._retry_at
        if not waiting:
            self.flush()

    def flush(self) -> bool:
        """Write what is pending; False when the database refused it (kept for the next try)."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return True
        try:
            if self.store is None:
                raise StorageError("no database")
            self.store.signins.record_own_requests(batch)
        except (StorageError, OSError) as exc:
            with self._lock:
                self._pending.extendleft(reversed(batch))
                first = self._retry_at == 0.0
                self._retry_at = time.monotonic() + self.RETRY_S
            if first and self.store is not None:
                log.warning("own token requests kept in memory until the database is back",
                            extra={"error": str(exc), "pending": len(batch)})
            return False
        with self._lock:
            self._retry_at = 0.0
            prune = self._pruned_at is None or time.monotonic() - self._pruned_at >= self.PRUNE_S
            if prune:
                self._pruned_at = time.monotonic()
        if prune:  # `mailwarden check` from cron never runs the poller's pruning: the table stays bounded anyway
            self.store.signins.prune_own_requests(datetime.now(UTC))
        return True

    def pending_ids(self) -> set[str]:
        with self._lock:
            return {r.correlation_id for r in self._pending}


def overlapping(windows: Sequence[ReauthWindow], client_id: str, account: str | None, at: datetime) -> bool:
    """Whether a reauthorisation window of this app and account covers ``at`` (with the clock margin)."""
    if not account:
        return False
    return any(w.client_id == client_id and w.account == account
               and w.started_at - WINDOW_MARGIN <= at <= w.ends_at + WINDOW_MARGIN for w in windows)

