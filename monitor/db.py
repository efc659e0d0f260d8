"""The store: engine set-up, migrations, the ``Database`` every repository shares, and ``Store``, which holds the
database and one repository per port (the reads and writes of the tables in ``monitor.models``):

- ``store.checks``: check results, states and transitions (``CheckRepository``, here);
- ``store.inventory``: the integrations and credential metadata mirrored from the config and Entra ID (here);
- ``store.token_caches``, ``store.meta``: encrypted token caches; small named values (here);
- ``store.alerts``: incidents, the outbox and send attempts, ``alerts.ports.AlertRepository`` (``monitor.db_alerts``);
- ``store.history``: rollups, availability and bounded raw results (``monitor.db_history``);
- ``store.rotation``: expiry reminders and rotations (``monitor.db_rotation``);
- ``store.reauth``: reauthorisation requests and attempts (``monitor.db_reauth``);
- ``store.signins``: the sign-in evidence (``monitor.db_signins``);
- ``store.backoff``: the back-off waits every worker of queue mode shares (``monitor.db_backoff``).

A repository reads and writes rows; no business rule lives in storage (the reauthorisation rule is
``monitor.pipeline``'s, applied inside ``record_result``'s transaction through ``in_transaction``). One short
transaction per method, safe to call from worker threads. SQLite runs in WAL mode and writes
take the write lock at BEGIN (``BEGIN IMMEDIATE``), so concurrent writers wait (``busy_timeout``)
instead of failing on a stale snapshot; PostgreSQL serialises writers of one check state with
``SELECT ... FOR UPDATE``. Objects returned are detached and fully loaded: read them freely.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, bindparam, create_engine, event, func, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import aliased, configure_mappers
from sqlmodel import Session, col, select

from mailwarden import state as sm
from mailwarden.checks.base import Outcome, Status
from mailwarden.errors import StorageError
from mailwarden.monitor.db_alerts import AlertRepository
from mailwarden.monitor.db_backoff import BackoffRepository
from mailwarden.monitor.db_history import HistoryRepository
from mailwarden.monitor.db_reauth import ReauthRepository
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.db_rotation import RotationRepository
from mailwarden.monitor.db_signins import SignInRepository
from mailwarden.monitor.models import (
    CheckResult,
    CheckState,
    Credential,
    Integration,
    Meta,
    TokenCache,
    Transition,
    table_of,
)
from mailwarden.redact import MASK, redact, redact_obj

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
M = TypeVar("M")
configure_mappers()  # the models' instrumentation, before ``_loaded`` builds any of them
INTEGRATION_FIELDS = ("tenant", "app", "flow", "mailbox", "account", "system", "tags", "owners", "checks",
                      "paused", "config_hash")
CREDENTIAL_FIELDS = ("reference", "display_name", "hint", "thumbprint", "start_at", "expires_at",
                     "last_verified_at")
_IMMEDIATE = "mailwarden_sqlite_immediate"


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean PostgreSQL through psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _mask_password(text: str, url: str) -> str:
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    return text.replace(str(password), MASK) if password else text


def display_url(url: str) -> str:
    """The URL with its password masked, fit for messages and logs."""
    return _mask_password(redact(url), url)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL, ``:memory:`` and ``file:`` URIs."""
    if not url.startswith("sqlite"):
        return None
    try:
        name = make_url(url).database
    except ArgumentError:
        return None
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists. SQLite gives its WAL, shared-memory and journal files
    the database file's mode, so none of them is readable by other users (it created them 0644 under the usual
    umask: the results, transcripts and encrypted tokens for anyone on the host). An existing file keeps its mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    os.close(fd)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None and path.parent.is_dir():
            create_private(path)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own BEGIN is always DEFERRED).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 10000")
            cur.execute("PRAGMA journal_mode = WAL")
            # WAL with NORMAL: no fsync per commit (only at checkpoints); a power cut may lose the last
            # results, never the database. FULL fsynced every result under the write lock (bench/).
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str | None = None) -> AlembicConfig:
    """An in-memory Alembic config (for ``command.revision(cfg, autogenerate=True)`` and friends)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision. Idempotent; safe when several instances start."""
    cfg = alembic_config()
    # IMMEDIATE: on SQLite a second process starting at once waits for the first instead of failing.
    with engine.connect().execution_options(**{_IMMEDIATE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Two instances starting together must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(726193500451)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _reason(exc: BaseException) -> str:
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    return redact(text)


def _kind(exc: DBAPIError) -> str:
    """StorageError's ``kind`` of a driver error."""
    if getattr(exc.orig, "sqlstate", None) in ("40P01", "40001"):  # deadlock detected, serialization failure
        return "conflict"
    if isinstance(exc, IntegrityError | DataError) and not exc.connection_invalidated:
        return "refused"
    return "unavailable"


def _hint(url: str) -> str:
    if url.startswith("sqlite"):
        return "Check that the directory of the database file exists and is writable"
    if url.startswith("postgresql"):
        try:
            u = make_url(url)
            where = f"{u.host or 'localhost'}:{u.port or 5432}"
        except ArgumentError:
            where = "the configured host"
        return (f"Is PostgreSQL running at {where}, and do the database and its user exist? "
                "Check 'database' in the configuration")
    return "Check 'database' in the configuration"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Connect (and migrate): every failure is one StorageError naming the database, never a traceback."""
    url = normalise_url(url)
    shown = display_url(url)
    engine = None
    try:
        if url.startswith("sqlite:///") and ":memory:" not in url:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
        with engine.connect():
            pass
        if migrate:
            upgrade(engine)
    except Exception as exc:  # any driver, Alembic or URL error becomes one readable message
        if engine is not None:
            engine.dispose()
        what = f"cannot {'open or migrate' if migrate else 'open'} the database {shown}: {_reason(exc)}"
        raise StorageError(_mask_password(what, url), hint=_hint(url)) from None
    return Store(engine, shown)


def _loaded(model: type[M], **values: Any) -> M:
    """A model object of a row just written or read with SQLAlchemy Core, built as the ORM builds a row it loads: no
    validation and no change tracking of each value (the model's own constructor cost 0.12 ms of CPU per result,
    a tenth of a mailbox check's share of storing; bench/). Not in any session (SQLAlchemy calls it transient): read
    it freely; never add it to a session (it would be inserted again)."""
    obj = model.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    fields = model.model_fields  # type: ignore[attr-defined]
    if len(values) < len(fields):  # a column the insert left to its default
        obj.__dict__.update({name: f.get_default(call_default_factory=True) for name, f in fields.items()
                             if name not in values})
    obj.__dict__.update(values)
    obj.__pydantic_fields_set__ = set(values)
    return obj


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


_STATES, _RESULTS, _TRANSITIONS = table_of(CheckState), table_of(CheckResult), table_of(Transition)
_CREDS = table_of(Credential)
_SELECT_STATE = _STATES.select().where(_STATES.c.integration == bindparam("s_integration"),
                                       _STATES.c.check == bindparam("s_check"))
_SELECT_STATES = _STATES.select().where(_STATES.c.integration == bindparam("s_integration"),
                                        _STATES.c.check.in_(bindparam("s_checks", expanding=True)))
_UPDATE_STATE = _STATES.update().where(_STATES.c.id == bindparam("state_id"))
_INSERT_RESULTS = _RESULTS.insert().returning(_RESULTS.c.id, sort_by_parameter_order=True)
_INSERT_TRANSITION = _TRANSITIONS.insert().returning(_TRANSITIONS.c.id)


def result_row(integration: str, check: str, outcome: Outcome, checked_at: datetime) -> dict[str, Any]:
    """The stored shape of one outcome (a ``CheckResult`` row's values): summary, metrics, transcript and raw reply
    redacted. What is printed of a result that could not be stored is this shape too (``monitor.output``)."""
    return dict(
        integration=integration, check=check, status=Status(outcome.status).value, code=outcome.code,
        summary=_storable(redact(outcome.summary)), latency_ms=outcome.latency_ms,
        details=redact_obj(_jsonable(outcome.metrics or {})),
        transcript=_storable(redact("\n".join(outcome.transcript))) if outcome.transcript else None,
        raw=_storable(redact(outcome.raw)) if outcome.raw is not None else None, checked_at=checked_at)


def _storable(text: str) -> str:
    """A NUL character shown as ``\\x00``: PostgreSQL's text columns refuse it (a server's reply may carry one)."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


@dataclass
class Pending:
    """A result taken and not yet stored (``CheckRepository.record_results``; waiting in ``monitor.buffer``)."""

    integration: str
    check: str
    outcome: Outcome
    checked_at: datetime
    thresholds: sm.Thresholds

    @property
    def status(self) -> str:
        return Status(self.outcome.status).value


@dataclass(frozen=True)
class Recorded:
    """What ``CheckRepository.record_result`` wrote: the result row, the Transition (None: the state did not change)
    and the status of the check's result before this one (None: its first). Unpacks as ``(result, transition)``."""

    result: CheckResult
    transition: Transition | None
    previous: str | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.result, self.transition))


class LatestRun(NamedTuple):
    checked_at: datetime | None  # None: never run (a state without a result, e.g. paused before its first run)
    status: str | None
    code: str | None
    not_before: datetime | None


def _aware(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


class Database:
    """The shared plumbing of every repository: the engine, one short session or connection per call (SQLite's
    writers take the write lock at BEGIN), the dialect's INSERT for upserts."""

    def __init__(self, engine: Engine, display: str | None = None):
        self.engine = engine
        self.display = display or display_url(engine.url.render_as_string(hide_password=False))
        self._sqlite = engine.dialect.name == "sqlite"
        self._lock = threading.Lock()  # only guards close()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                if write and self._sqlite:
                    session.connection(execution_options={_IMMEDIATE: True})
                yield session
                session.commit()
        except DBAPIError as exc:
            raise StorageError(f"database {self.display} failed: {_reason(exc)}",
                               hint=_hint(str(self.engine.url)), kind=_kind(exc)) from None

    def _insert(self) -> Any:
        return sqlite_insert if self._sqlite else pg_insert

    @contextmanager
    def _connection(self, write: bool = False) -> Iterator[Any]:
        try:
            conn = self.engine.connect()
            if write and self._sqlite:
                conn = conn.execution_options(**{_IMMEDIATE: True})
            with conn, conn.begin():
                yield conn
        except DBAPIError as exc:
            raise StorageError(f"database {self.display} failed: {_reason(exc)}",
                               hint=_hint(str(self.engine.url)), kind=_kind(exc)) from None

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    def count(self, model: type, **where: Any) -> int:
        """Rows of a table (tests and diagnostics)."""
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        with self._session() as s:
            return int(s.exec(stmt).one())


class CheckRepository(Repository):
    """Check results, check states and their transitions."""

    def _locked_state(self, s: Session, integration: str, check: str) -> CheckState:
        stmt = (select(CheckState).where(CheckState.integration == integration, CheckState.check == check)
                .with_for_update().execution_options(populate_existing=True))
        row = s.exec(stmt).first()
        if row is None:
            # A concurrent first result may create it too: insert-or-nothing, then lock whichever won.
            s.execute(self._insert()(CheckState).values(integration=integration, check=check, status=sm.NEW,
                                                        failures=0, successes=0)
                      .on_conflict_do_nothing(index_elements=["integration", "check"]))
            row = s.exec(stmt).one()
        return row

    def record_result(self, *, integration: str, check: str, outcome: Outcome, checked_at: datetime,
                      thresholds: sm.Thresholds,
                      in_transaction: Callable[[Any, Recorded], None] | None = None) -> Recorded:
        """One result (``record_results``)."""
        return self.record_results([Pending(integration, check, outcome, checked_at, thresholds)], in_transaction)[0]

    def record_results(self, items: Sequence[Pending],
                       in_transaction: Callable[[Any, Recorded], None] | None = None) -> list[Recorded]:
        """Store results in the order given, each folded into its check's state (``mailwarden.state.advance``, pure)
        with a Transition when the state changes: one transaction for them all (the result pipeline writes the
        results taken while its last write ran together: ``monitor.pipeline``). ``in_transaction(conn, recorded)``
        runs for each, in order, last inside it, before the commit (the pipeline's reauthorisation rule); everything
        else that follows a result is the pipeline's, after the commit."""
        # SQLAlchemy Core, not the ORM unit of work: this runs for every check, and the ORM spent about 4 ms of CPU per
        # result, more than a whole mailbox check may (bench/). One statement per kind of row for the whole batch.
        if not items:
            return []
        rows = [result_row(p.integration, p.check, p.outcome, p.checked_at) for p in items]
        attempt = 1
        while True:
            try:
                return self._record_rows(items, rows, in_transaction)
            except StorageError as exc:
                if exc.kind != "conflict" or attempt == 3:  # two writers' transactions: one was rolled back, again
                    raise
                attempt += 1

    def _record_rows(self, items: Sequence[Pending], rows: list[dict[str, Any]],
                     in_transaction: Callable[[Any, Recorded], None] | None) -> list[Recorded]:
        with self._connection(write=True) as conn:
            # The states first, locked in key order (two writers' batches never wait for each other in a cycle), so
            # result ids follow the order in which the states were folded.
            states = self._locked_state_rows(conn, {(p.integration, p.check) for p in items})
            ids = [r.id for r in conn.execute(_INSERT_RESULTS, rows)]
            updates: list[dict[str, Any]] = []
            out: list[Recorded] = []
            for p, values, result_id in zip(items, rows, ids, strict=True):
                st = states[(p.integration, p.check)]
                status = values["status"]
                new, event_ = sm.advance(sm.StateSnapshot(st["status"], st["failures"], st["successes"], st["since"]),
                                         status, p.thresholds, p.checked_at)
                update = dict(state_id=st["id"], status=new.status, failures=new.failures, successes=new.successes,
                              since=new.since, last_status=status, last_code=p.outcome.code, last_result_id=result_id,
                              last_checked_at=p.checked_at,
                              last_ok_at=p.checked_at if status in sm.GOOD else st["last_ok_at"],
                              not_before=(p.checked_at + timedelta(seconds=p.outcome.retry_after_s)
                                          if p.outcome.retry_after_s else None))
                updates.append(update)  # every update sets the same columns: one statement, run in this order
                transition = None
                if event_ is not None:
                    tvalues = dict(integration=p.integration, check=p.check, from_status=event_.from_status,
                                   to_status=event_.to_status, code=p.outcome.code, result_id=result_id, at=event_.at,
                                   silent=event_.silent)
                    tid = conn.execute(_INSERT_TRANSITION, tvalues).scalar_one()
                    transition = _loaded(Transition, id=tid, **tvalues)
                out.append(Recorded(_loaded(CheckResult, id=result_id, **values), transition, st["last_status"]))
                # the next result of the same check in this batch folds into this one's state
                st.update(status=new.status, failures=new.failures, successes=new.successes, since=new.since,
                          last_status=status, last_ok_at=update["last_ok_at"])
            conn.execute(_UPDATE_STATE, updates)
            if in_transaction is not None:
                # by integration (a stable sort: each one's results in order), so two writers' reauthorisation rows,
                # unique by integration, are written in one order too
                for recorded in sorted(out, key=lambda r: r.result.integration):
                    in_transaction(conn, recorded)
        return out

    def _locked_state_rows(self, conn: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The states of ``keys``, locked until the commit (PostgreSQL: FOR UPDATE, in key order; SQLite: the write
        lock taken at BEGIN), as dicts; a missing state is created first."""
        def read(wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
            if len(wanted) == 1:  # a statement compiled once (a result alone: `mailwarden check`, a re-run)
                (integration, check), = wanted
                stmt, params = _SELECT_STATE, {"s_integration": integration, "s_check": check}
            else:
                stmt = (_STATES.select().where(tuple_(_STATES.c.integration, _STATES.c.check).in_(sorted(wanted)))
                        .order_by(_STATES.c.integration, _STATES.c.check))
                params = {}
            if not self._sqlite:
                stmt = stmt.with_for_update()
            return {(r.integration, r.check): dict(r._mapping) for r in conn.execute(stmt, params)}

        found = read(keys)
        missing = keys - found.keys()
        if missing:
            # A concurrent first result may create one too: insert-or-nothing, then lock whichever won.
            conn.execute(self._insert()(_STATES).on_conflict_do_nothing(index_elements=["integration", "check"]),
                         [dict(integration=i, check=c, status=sm.NEW, failures=0, successes=0)
                          for i, c in sorted(missing)])
            found.update(read(missing))
        return found

    def pause(self, integration: str, check: str, now: datetime) -> tuple[CheckState, Transition | None]:
        with self._session(write=True) as s:
            st = self._locked_state(s, integration, check)
            new, event_ = sm.pause(sm.StateSnapshot(st.status, st.failures, st.successes, st.since), now)
            st.status, st.failures, st.successes, st.since = new.status, new.failures, new.successes, new.since
            transition = None
            if event_ is not None:
                transition = Transition(integration=integration, check=check, from_status=event_.from_status,
                                        to_status=event_.to_status, at=event_.at, silent=event_.silent)
                s.add(transition)
            s.add(st)
        return st, transition

    def get_state(self, integration: str, check: str) -> CheckState | None:
        # Core as in record_result: read before every scheduled run and every mailbox check (bench/).
        with self._connection() as conn:
            row = conn.execute(_SELECT_STATE, {"s_integration": integration, "s_check": check}).first()
        return _loaded(CheckState, **row._mapping) if row is not None else None

    def get_states(self, integration: str, checks: Iterable[str]) -> dict[str, CheckState]:
        """The stored states of several of one integration's checks, by check, in one query (a queue job reads its
        own and its dependencies'); a check that never ran is missing."""
        with self._connection() as conn:
            rows = conn.execute(_SELECT_STATES, {"s_integration": integration, "s_checks": sorted(set(checks))})
            return {row.check: _loaded(CheckState, **row._mapping) for row in rows}

    def latest(self) -> dict[tuple[str, str], LatestRun]:
        """Each (integration, check)'s last stored run: when, its status and code, until when it waits. The
        scheduler reads it once when it starts or takes over: checks run when next due after their last run
        (never twice in one interval), and no check's first run needs a state read of its own (bench/)."""
        stmt = select(CheckState.integration, CheckState.check, CheckState.last_checked_at,  # type: ignore[call-overload]
                      CheckState.last_status, CheckState.last_code, CheckState.not_before)
        with self._connection() as conn:
            return {(i, c): LatestRun(_aware(at), status, code, _aware(nb))
                    for i, c, at, status, code, nb in conn.execute(stmt)}

    def states(self, integration: str | None = None) -> list[CheckState]:
        stmt = select(CheckState).order_by(CheckState.integration, CheckState.check)
        if integration is not None:
            stmt = stmt.where(CheckState.integration == integration)
        with self._session() as s:
            return list(s.exec(stmt))

    def latest_results(self, integration: str | None = None) -> list[CheckResult]:
        """The newest result (by checked_at, then id) of every (integration, check)."""
        r = aliased(CheckResult)
        newest = (select(r.id).where(r.integration == CheckState.integration, r.check == CheckState.check)
                  .order_by(col(r.checked_at).desc(), col(r.id).desc()).limit(1)
                  .correlate(CheckState).scalar_subquery())
        ids = select(newest).select_from(CheckState)
        if integration is not None:
            ids = ids.where(CheckState.integration == integration)
        stmt = (select(CheckResult).where(col(CheckResult.id).in_(ids))
                .order_by(CheckResult.integration, CheckResult.check))
        with self._session() as s:
            return list(s.exec(stmt))

    def results(self, integration: str, check: str | None = None, since: datetime | None = None,
                limit: int = 100) -> list[CheckResult]:
        """Newest first."""
        stmt = select(CheckResult).where(CheckResult.integration == integration)
        if check is not None:
            stmt = stmt.where(CheckResult.check == check)
        if since is not None:
            stmt = stmt.where(CheckResult.checked_at >= since)
        stmt = stmt.order_by(col(CheckResult.checked_at).desc(), col(CheckResult.id).desc()).limit(limit)
        with self._session() as s:
            return list(s.exec(stmt))

    def transitions(self, integration: str | None = None, limit: int = 100) -> list[Transition]:
        """Newest first."""
        stmt = select(Transition).order_by(col(Transition.at).desc(), col(Transition.id).desc()).limit(limit)
        if integration is not None:
            stmt = stmt.where(Transition.integration == integration)
        with self._session() as s:
            return list(s.exec(stmt))


class InventoryRepository(Repository):
    """The configuration's mirrors: integrations, and the credential metadata read from Entra ID."""

    def sync_integrations(self, rows: list[dict[str, Any]], now: datetime) -> list[str]:
        """Upsert by name; mark names missing from ``rows`` removed (revive returning ones).

        Returns the names newly marked removed."""
        wanted: dict[str, dict[str, Any]] = {}
        for row in rows:
            unknown = set(row) - {"name", *INTEGRATION_FIELDS}
            if unknown:
                raise ValueError(f"unknown integration fields: {sorted(unknown)}")
            wanted[row["name"]] = row
        removed: list[str] = []
        with self._session(write=True) as s:
            if not self._sqlite:  # instances starting together (monitor.leader) must not both insert a name
                s.connection().exec_driver_sql("SELECT pg_advisory_xact_lock(726193500453)")
            existing = {i.name: i for i in s.exec(select(Integration))}
            for name, row in wanted.items():
                values = {k: row[k] for k in INTEGRATION_FIELDS if k in row}
                item = existing.get(name)
                if item is None:
                    s.add(Integration.model_validate({"name": name, **values, "created_at": now,
                                                      "updated_at": now}))
                    continue
                changed = item.removed_at is not None or any(getattr(item, k) != v for k, v in values.items())
                if changed:
                    for k, v in values.items():
                        setattr(item, k, v)
                    item.removed_at, item.updated_at = None, now
                    s.add(item)
            for name, item in existing.items():
                if name not in wanted and item.removed_at is None:
                    item.removed_at = item.updated_at = now
                    s.add(item)
                    removed.append(name)
        return sorted(removed)

    def integrations(self, include_removed: bool = False) -> list[Integration]:
        stmt = select(Integration).order_by(Integration.name)
        if not include_removed:
            stmt = stmt.where(col(Integration.removed_at).is_(None))
        with self._session() as s:
            return list(s.exec(stmt))

    def upsert_credentials(self, *, tenant: str, app: str, client_id: str, creds: list[dict[str, Any]],
                           now: datetime, source: str, kinds: Iterable[str] | None = None) -> None:
        """Upsert by (client_id, kind, key_id). Rows of this client_id and source (and of ``kinds``,
        when given) that are not in ``creds`` get removed_at: an empty list from Graph means the app
        has no credentials left."""
        # SQLAlchemy Core, as record_result: every credential read (each app, every minute a check asks) wrote
        # through the ORM's unit of work, about 1.2 ms of CPU a read (bench/, session 3). Same rows, same rules.
        seen: set[tuple[str, str]] = set()
        with self._connection(write=True) as conn:
            current = conn.execute(_CREDS.select().where(_CREDS.c.client_id == client_id)).mappings()
            by_key = {(r["kind"], r["key_id"] or ""): dict(r) for r in current}
            for cred in creds:
                unknown = set(cred) - {"kind", "key_id", *CREDENTIAL_FIELDS}
                if unknown:
                    raise ValueError(f"unknown credential fields: {sorted(unknown)}")
                key = (cred["kind"], cred.get("key_id") or "")
                seen.add(key)
                values = {k: cred[k] for k in CREDENTIAL_FIELDS if k in cred}
                values.update(tenant=tenant, app=app, source=source, last_seen_at=now, removed_at=None)
                row = by_key.get(key)
                if row is None:
                    values.update(client_id=client_id, kind=cred["kind"], key_id=cred.get("key_id"),
                                  first_seen_at=now)
                    conn.execute(_CREDS.insert(), values)
                    by_key[key] = {**values, "removed_at": None}
                else:
                    conn.execute(_CREDS.update().where(_CREDS.c.id == row["id"]), values)
                    row.update(values)
            scope = set(kinds) if kinds is not None else None
            gone = [row["id"] for key, row in by_key.items()
                    if key not in seen and row["source"] == source and row["removed_at"] is None
                    and (scope is None or row["kind"] in scope)]
            if gone:
                conn.execute(_CREDS.update().where(_CREDS.c.id.in_(gone)).values(removed_at=now))

    def credentials(self, client_id: str | None = None, include_removed: bool = False) -> list[Credential]:
        stmt = select(Credential).order_by(col(Credential.client_id), col(Credential.kind), col(Credential.expires_at))
        if client_id is not None:
            stmt = stmt.where(Credential.client_id == client_id)
        if not include_removed:
            stmt = stmt.where(col(Credential.removed_at).is_(None))
        with self._session() as s:
            return list(s.exec(stmt))


class TokenCacheRepository(Repository):
    """The encrypted MSAL token caches, by token key (tenant, app, account)."""

    def save_token_cache(self, token_key: str, integration: str, ciphertext: bytes, key_fingerprint: str,
                         account: str | None, now: datetime, *, public_client: bool | None = None,
                         oid: str | None = None) -> None:
        """Insert or replace the cache of ``token_key`` (tenant, app, account), stored by ``integration``.
        ``public_client`` given: a new sign-in, whose kind and user (``oid``, None for unknown) replace the stored
        ones. ``public_client`` None: the same sign-in's rotated cache, so the stored kind and user stay (a new row
        is confidential, with no user)."""
        values: dict[str, Any] = {"ciphertext": bytes(ciphertext), "key_fingerprint": key_fingerprint,
                                  "account": account, "updated_at": now, "integration": integration}
        if public_client is not None:
            values.update(public_client=bool(public_client), oid=oid)
        with self._session(write=True) as s:
            stmt = self._insert()(TokenCache).values(token_key=token_key, **values)
            s.execute(stmt.on_conflict_do_update(index_elements=["token_key"], set_=values))

    def load_token_cache(self, token_key: str, integration: str | None = None) -> TokenCache | None:
        """The cache of ``token_key``; else a row from before migration 0009 that ``integration`` stored under its
        own name, which it adopts (its token_key is set) so that the other integrations of the account find it."""
        with self._session() as s:
            row = s.exec(select(TokenCache).where(TokenCache.token_key == token_key)).first()
        if row is not None or integration is None:
            return row
        with self._session(write=True) as s:
            legacy = s.exec(select(TokenCache).where(TokenCache.token_key.is_(None),  # type: ignore[union-attr]
                                                     TokenCache.integration == integration)).first()
            if legacy is None:
                return None
            legacy.token_key = token_key
            s.add(legacy)
            s.flush()
            s.refresh(legacy)
            s.expunge(legacy)
            return legacy

    def delete_token_cache(self, token_key: str) -> None:
        with self._session(write=True) as s:
            row = s.exec(select(TokenCache).where(TokenCache.token_key == token_key)).first()
            if row is not None:
                s.delete(row)

    def rekey_token_caches(self, transform, new_fingerprint: str, meta_key: str) -> int:
        """Re-encrypt every token cache with ``transform`` and record the new key's fingerprint, in one
        transaction: a failure half-way leaves every row readable with the old key."""
        with self._session(write=True) as s:
            rows = list(s.exec(select(TokenCache)))
            for row in rows:
                row.ciphertext = transform(bytes(row.ciphertext))
                row.key_fingerprint = new_fingerprint
                s.add(row)
            stmt = self._insert()(Meta).values(key=meta_key, value=new_fingerprint)
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": new_fingerprint}))
        return len(rows)


class MetaRepository(Repository):
    """Small named values (``meta``): watermarks, poll marks, ended web sessions."""

    def get_meta(self, key: str) -> str | None:
        with self._session() as s:
            row = s.get(Meta, key)
            return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        with self._session(write=True) as s:
            stmt = self._insert()(Meta).values(key=key, value=value)
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))


class Store:
    """The database and one repository per port. ``close``, ``engine`` and ``count`` are the database's."""

    def __init__(self, engine: Engine, display: str | None = None):
        self.database = db = Database(engine, display)
        self.checks = CheckRepository(db)
        self.inventory = InventoryRepository(db)
        self.token_caches = TokenCacheRepository(db)
        self.meta = MetaRepository(db)
        self.alerts = AlertRepository(db)
        self.history = HistoryRepository(db)
        self.rotation = RotationRepository(db)
        self.reauth = ReauthRepository(db)
        self.signins = SignInRepository(db, self.meta)
        self.backoff = BackoffRepository(db)

    @property
    def engine(self) -> Engine:
        return self.database.engine

    def close(self) -> None:
        self.database.close()

    def count(self, model: type, **where: Any) -> int:
        """Rows of a table (tests and diagnostics)."""
        return self.database.count(model, **where)
