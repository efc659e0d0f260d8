"""Contract suite of the store: every test that takes ``store`` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.exc import IntegrityError

from mailwarden import state as sm
from mailwarden.checks.base import Outcome, Status
from mailwarden.errors import StorageError
from mailwarden.monitor.db import Store, alembic_config, make_engine, open_store, upgrade
from mailwarden.monitor.models import MODELS, TABLE_NAMES, CheckResult, CheckState, Transition
from mailwarden.redact import register_secret

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TH = sm.Thresholds(failure_threshold=2, success_threshold=1)


def record(store: Store, status: str, minute: int, *, check: str = "token", integration: str = "helpdesk",
           th: sm.Thresholds = TH, **kw):
    outcome = Outcome(Status(status), kw.pop("code", None if status == "ok" else f"{status}_code"),
                      kw.pop("summary", status), **kw)
    return store.checks.record_result(integration=integration, check=check, outcome=outcome,
                                      checked_at=T0 + timedelta(minutes=minute), thresholds=th)


def test_migrations_idempotent_and_match_models(store):
    upgrade(store.engine)
    upgrade(store.engine)
    assert set(TABLE_NAMES) | {"alembic_version"} <= set(inspect(store.engine).get_table_names())
    mine = MetaData()
    for model in MODELS:
        model.__table__.to_metadata(mine)
    with store.engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None and head >= "0008"  # 0008: integration_rollups
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
        with warnings.catch_warnings():  # expression index ux_credentials_identity: not comparable
            warnings.simplefilter("ignore")
            diff = compare_metadata(MigrationContext.configure(conn), mine)
    assert [d for d in diff if "ux_credentials_identity" not in repr(d)] == []
    # ... so check that one by behaviour: a second config credential (no key_id) of one kind is refused
    insert = text("INSERT INTO credentials (tenant, app, client_id, kind, source, first_seen_at, last_seen_at)"
                  " VALUES ('t', 'a', 'c', 'client_secret', 'config', :now, :now)")
    with store.engine.begin() as conn:
        conn.execute(insert, {"now": T0.replace(tzinfo=None)})
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert, {"now": T0.replace(tzinfo=None)})


def test_transitions_follow_the_state_machine(store):
    r1, t1 = record(store, "ok", 0)
    assert (t1.from_status, t1.to_status, t1.silent, t1.result_id) == ("new", "ok", True, r1.id)
    _, t2 = record(store, "fail", 1)
    assert t2 is None and store.checks.get_state("helpdesk", "token").failures == 1
    r3, t3 = record(store, "fail", 2)
    assert (t3.from_status, t3.to_status, t3.silent, t3.code, t3.result_id) == ("ok", "fail", False,
                                                                                  "fail_code", r3.id)
    _, t4 = record(store, "error", 3)  # bad -> bad follows at once
    assert (t4.from_status, t4.to_status) == ("fail", "error")
    _, t5 = record(store, "warn", 4)
    assert (t5.from_status, t5.to_status) == ("error", "warn")
    st = store.checks.get_state("helpdesk", "token")
    assert (st.status, st.successes, st.failures, st.since) == ("warn", 1, 0, T0 + timedelta(minutes=4))
    assert (st.last_status, st.last_code, st.last_checked_at) == ("warn", "warn_code", T0 + timedelta(minutes=4))
    assert st.last_ok_at == T0 + timedelta(minutes=4) and st.last_ok_at.tzinfo == UTC
    assert [(t.from_status, t.to_status) for t in store.checks.transitions("helpdesk")] == [
        ("error", "warn"), ("fail", "error"), ("ok", "fail"), ("new", "ok")]
    assert store.count(CheckResult) == 5 and store.count(Transition) == 4


def test_not_before_from_retry_after_and_cleared(store):
    record(store, "warn", 0, code="throttled", retry_after_s=120)
    assert store.checks.get_state("helpdesk", "token").not_before == T0 + timedelta(minutes=2)
    record(store, "ok", 3)
    assert store.checks.get_state("helpdesk", "token").not_before is None


def test_states_of_several_checks_in_one_read_and_covers(store):
    """A queue job reads its own state and its dependencies' at once, and skips when a result for its due time is
    stored."""
    record(store, "fail", 0, code="secret_expired")
    record(store, "ok", 1, check="imap")
    record(store, "ok", 2, check="imap", integration="other")
    states = store.checks.get_states("helpdesk", ["imap", "token", "pop", "imap"])
    assert sorted(states) == ["imap", "token"]  # pop never ran; one integration's only
    assert (states["token"].last_status, states["token"].last_code) == ("fail", "secret_expired")
    assert states["imap"].last_checked_at == T0 + timedelta(minutes=1)
    assert states["imap"].covers(T0 + timedelta(minutes=1)) and states["imap"].covers(T0)
    assert not states["imap"].covers(T0 + timedelta(minutes=1, microseconds=1))
    assert not CheckState(integration="x", check="y").covers(T0)  # never ran
    assert store.checks.get_states("helpdesk", []) == {}


def test_pause_then_ok_is_silent(store):
    record(store, "fail", 0)
    record(store, "fail", 1)
    st, tr = store.checks.pause("helpdesk", "token", T0 + timedelta(minutes=2))
    assert st.status == "paused" and (tr.from_status, tr.to_status, tr.result_id) == ("fail", "paused", None)
    assert store.checks.pause("helpdesk", "token", T0 + timedelta(minutes=3))[1] is None
    _, t = record(store, "ok", 4)
    assert (t.from_status, t.to_status, t.silent) == ("paused", "ok", True)


def test_latest_results_and_queries(store):
    record(store, "ok", 5, check="imap")
    record(store, "fail", 1, check="imap")  # recorded later, but older
    record(store, "ok", 0)
    record(store, "warn", 2)
    record(store, "ok", 3, integration="other")
    latest = store.checks.latest_results()
    assert [(r.integration, r.check, r.status) for r in latest] == [
        ("helpdesk", "imap", "ok"), ("helpdesk", "token", "warn"), ("other", "token", "ok")]
    assert [r.check for r in store.checks.latest_results("helpdesk")] == ["imap", "token"]
    assert [r.status for r in store.checks.results("helpdesk", "imap")] == ["ok", "fail"]
    assert [r.status for r in store.checks.results("helpdesk", since=T0 + timedelta(minutes=2))] == ["ok", "warn"]
    assert len(store.checks.results("helpdesk", limit=2)) == 2
    assert [s.integration for s in store.checks.states()] == ["helpdesk", "helpdesk", "other"]
    assert [s.check for s in store.checks.states("helpdesk")] == ["imap", "token"]
    assert store.checks.get_state("nobody", "token") is None


def test_sync_integrations_marks_removed_and_revives(store):
    def row(name, **kw):
        return {"name": name, "tenant": "contoso", "app": "helpdesk", "flow": "delegated",
                "mailbox": f"{name}@contoso.com", "tags": ["helpdesk"], "owners": ["it@contoso.com"],
                "checks": ["token", "pop"], "config_hash": "h1", **kw}

    assert store.inventory.sync_integrations([row("a"), row("b")], T0) == []
    assert store.inventory.sync_integrations([row("a", paused=True, tags=["x"])], T0 + timedelta(hours=1)) == ["b"]
    a, = store.inventory.integrations()
    assert (a.name, a.paused, a.tags, a.checks, a.updated_at) == ("a", True, ["x"], ["token", "pop"],
                                                                  T0 + timedelta(hours=1))
    assert {i.name: i.removed_at for i in store.inventory.integrations(include_removed=True)} == {
        "a": None, "b": T0 + timedelta(hours=1)}
    assert store.inventory.sync_integrations([row("a", paused=True, tags=["x"]), row("b")],
                                             T0 + timedelta(hours=2)) == []
    assert [i.name for i in store.inventory.integrations()] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown integration fields"):
        store.inventory.sync_integrations([row("c", colour="red")], T0)


def test_credentials_upsert_and_removal(store):
    def secret(key_id, days, hint="abc"):
        return {"kind": "client_secret", "key_id": key_id, "hint": hint, "display_name": key_id,
                "start_at": T0, "expires_at": T0 + timedelta(days=days)}

    kw = {"tenant": "contoso", "app": "helpdesk", "client_id": "cid-1", "source": "graph"}
    store.inventory.upsert_credentials(creds=[secret("k1", 30), secret("k2", 300)], now=T0, **kw)
    store.inventory.upsert_credentials(creds=[{"kind": "client_secret", "reference": "env:HELPDESK_SECRET",
                                               "expires_at": T0}], now=T0, **{**kw, "source": "config"})
    later = T0 + timedelta(days=1)
    store.inventory.upsert_credentials(creds=[secret("k2", 300, hint="xyz"), secret("k3", 400)], now=later, **kw)
    live = store.inventory.credentials("cid-1")
    assert sorted((c.key_id or "", c.source) for c in live) == [("", "config"), ("k2", "graph"), ("k3", "graph")]
    k2 = next(c for c in live if c.key_id == "k2")
    assert (k2.hint, k2.first_seen_at, k2.last_seen_at, k2.expires_at) == ("xyz", T0, later,
                                                                          T0 + timedelta(days=300))
    gone = [c for c in store.inventory.credentials(include_removed=True) if c.removed_at is not None]
    assert [(c.key_id, c.removed_at) for c in gone] == [("k1", later)]
    store.inventory.upsert_credentials(creds=[secret("k1", 30)], now=later, kinds=["certificate"], **kw)
    assert sorted(c.key_id or "" for c in store.inventory.credentials("cid-1")) == ["", "k1", "k2", "k3"]
    store.inventory.upsert_credentials(creds=[], now=later, **kw)  # the app has no secrets left on Graph
    assert [c.source for c in store.inventory.credentials("cid-1")] == ["config"]
    assert store.inventory.credentials("other") == []


def test_token_cache_round_trip(store):
    """One cache per (tenant, app, account): two integrations of one account share it (migration 0009)."""
    blob = bytes(range(256)) * 4
    key = "tid:cid:mail@contoso.com"
    assert store.token_caches.load_token_cache(key) is None
    store.token_caches.save_token_cache(key, "helpdesk", blob, "sha256:aa", "mail@contoso.com", T0)
    store.token_caches.save_token_cache(key, "helpdesk-imap", blob[::-1], "sha256:bb", None, T0 + timedelta(minutes=1))
    row = store.token_caches.load_token_cache(key)
    assert (row.ciphertext, row.key_fingerprint, row.account, row.updated_at, row.integration) == (
        blob[::-1], "sha256:bb", None, T0 + timedelta(minutes=1), "helpdesk-imap")
    store.token_caches.delete_token_cache(key)
    store.token_caches.delete_token_cache(key)
    assert store.token_caches.load_token_cache(key) is None


def test_meta(store):
    assert store.meta.get_meta("token_key_fingerprint") is None
    store.meta.set_meta("token_key_fingerprint", "sha256:1")
    store.meta.set_meta("token_key_fingerprint", "sha256:2")
    assert store.meta.get_meta("token_key_fingerprint") == "sha256:2"


def test_secrets_are_redacted_in_the_database(store):
    secret = f"Zq8~{uuid.uuid4().hex}"
    register_secret(secret)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMxMjMifQ.c2lnbmF0dXJlX3ZhbHVl"
    record(store, "fail", 0, code="unclassified", summary=f"rejected {secret}",
           transcript=[f"C: AUTHENTICATE XOAUTH2 {jwt}", "S: NO AUTHENTICATE failed."],
           raw=f'{{"client_secret": "{secret}", "token": "{jwt}"}}', metrics={"echo": secret, "n": 1})
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM check_results")).all()
    dump = repr(rows)
    assert secret not in dump and jwt not in dump and "[redacted]" in dump
    assert "NO AUTHENTICATE failed." in dump


def test_concurrent_results_lose_nothing(store):
    per_thread, threads = 6, 8
    statuses = ["ok", "fail", "fail", "error", "warn", "blocked"]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                record(store, statuses[(n + i) % len(statuses)], n * per_thread + i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    total = per_thread * threads
    assert store.count(CheckResult) == total and store.count(CheckState) == 1
    # The stored state must equal a replay of the results in the order they were folded (id order).
    replay, expected = sm.StateSnapshot(), []
    for r in sorted(store.checks.results("helpdesk", "token", limit=total), key=lambda r: r.id):
        replay, ev = sm.advance(replay, r.status, TH, r.checked_at)
        if ev:
            expected.append((ev.from_status, ev.to_status, r.id))
    st = store.checks.get_state("helpdesk", "token")
    assert (st.status, st.failures, st.successes, st.since) == (replay.status, replay.failures,
                                                                replay.successes, replay.since)
    assert st.last_result_id == max(r.id for r in store.checks.results("helpdesk", limit=total))
    got = [(t.from_status, t.to_status, t.result_id) for t in store.checks.transitions(limit=total)]
    assert sorted(got, key=lambda t: t[2]) == expected


def test_returned_objects_are_detached_and_aware(store):
    result, transition = record(store, "ok", 0, latency_ms=12.5, metrics={"days_left": 3})
    assert (result.id, result.details, result.latency_ms, result.checked_at.tzinfo) == (1, {"days_left": 3},
                                                                                        12.5, UTC)
    assert transition.at == T0
    with pytest.raises(StorageError):  # a broken database is a StorageError, not a driver exception
        with store.database._session() as s:
            s.exec(text("SELECT * FROM no_such_table"))


def test_sqlite_pragmas(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_unreachable_postgres_is_a_storage_error():
    with pytest.raises(StorageError) as info:
        open_store("postgresql://mailwarden:Hunter2-Sup3r-Secret@127.0.0.1:1/mailwarden_prod")
    message = str(info.value)
    assert "mailwarden_prod" in message and "127.0.0.1" in message and "PostgreSQL running" in message
    assert "Hunter2-Sup3r-Secret" not in message and "Traceback" not in message and "\n" not in message


def test_unopenable_sqlite_is_a_storage_error(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StorageError, match="a-file"):
        open_store(f"sqlite:///{tmp_path / 'a-file' / 'x.db'}")


def test_url_rewriting():
    for url in ("postgres://u@h/d", "postgresql://u@h/d", "postgresql+psycopg://u@h/d"):
        assert make_engine(url).url.drivername == "postgresql+psycopg"


def test_unknown_schema_revision_is_a_storage_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    open_store(url).close()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with pytest.raises(StorageError, match="9999_from_the_future"):
        open_store(url)
    open_store(url, migrate=False).close()  # reading without migrating still works
