"""Migration 0013 (queue mode, issue 20): on PostgreSQL the store's migrations give procrastinate its schema, in a
schema of its own (``procrastinate``), once, and procrastinate's own API works on it; on SQLite the revision adds the
shared back-off table only. The vendored schema file is procrastinate's, byte for byte, and an upgrade of procrastinate
that brings a migration of its schema fails here until a revision of ours applies it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from procrastinate import App, SyncPsycopgConnector
from procrastinate.schema import SchemaManager
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from mailwarden.monitor import db as db_mod
from mailwarden.monitor.db import alembic_config, open_store
from tests.pg import fresh_database

VENDORED = Path(db_mod.__file__).with_name("migrations") / "sql" / "procrastinate-3.10.0-schema.sql"
VENDORED_VERSION = (3, 10, 0)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
QUEUE_TABLES = {"procrastinate_jobs", "procrastinate_events", "procrastinate_workers", "procrastinate_periodic_defers"}


def _schemas_of(conn, name: str) -> list[str]:
    return conn.execute(text("SELECT table_schema FROM information_schema.tables WHERE table_name = :name"),
                        {"name": name}).scalars().all()


def _queue_url(url: str) -> str:
    """The libpq URL of the same database (procrastinate's connector is psycopg's, not SQLAlchemy's)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_the_vendored_schema_is_the_installed_procrastinate_schema():
    assert VENDORED.read_bytes() == SchemaManager.get_schema().encode("utf-8"), (
        f"{VENDORED.name} differs from the installed procrastinate's sql/schema.sql: the schema migration 0013 "
        "applies is not the one this procrastinate expects")


def test_procrastinate_brings_no_schema_migration_past_the_vendored_version():
    names = sorted(p.name for p in Path(SchemaManager.get_migrations_path()).glob("*.sql"))
    assert names, "procrastinate's sql/migrations is empty or moved: check how it ships its schema migrations"
    newer = []
    for name in names:
        found = re.match(r"(\d+)\.(\d+)\.(\d+)_", name)
        assert found, f"unexpected name in procrastinate's sql/migrations: {name}"
        if tuple(int(g) for g in found.groups()) > VENDORED_VERSION:
            newer.append(name)
    assert newer == [], (
        f"the installed procrastinate migrates its schema past {'.'.join(map(str, VENDORED_VERSION))} ({newer}): "
        "procrastinate tracks no applied migration itself, so add an Alembic revision after 0013 that applies these "
        "files in the procrastinate schema (search_path=procrastinate) and vendor them, then raise the pin")


@pytest.mark.postgres
def test_postgres_gets_the_queue_in_its_own_schema_once():
    with fresh_database("mw_queue_schema") as url:
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                for table in QUEUE_TABLES:
                    assert _schemas_of(conn, table) == ["procrastinate"], table
                assert _schemas_of(conn, "alembic_version") == ["public"]
                assert _schemas_of(conn, "backoff_waits") == ["public"]
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
                options = conn.execute(text("SELECT reloptions FROM pg_class "
                                            "WHERE oid = 'procrastinate.procrastinate_jobs'::regclass")).scalar()
                assert sorted(options) == ["autovacuum_analyze_scale_factor=0.02",
                                           "autovacuum_vacuum_scale_factor=0.02"]
                # the % of the file's RAISE messages arrive single: doubled for the driver, not for PostgreSQL
                bodies = conn.execute(text("SELECT string_agg(p.prosrc, '') FROM pg_proc p JOIN pg_namespace n "
                                           "ON n.oid = p.pronamespace WHERE n.nspname = 'procrastinate'")).scalar()
                assert "(job id: %)" in bodies and "%%" not in bodies
        finally:
            store.close()
        open_store(url).close()  # a second start: the schema is there already, nothing is applied twice
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
                assert _schemas_of(conn, "procrastinate_jobs") == ["procrastinate"]
        finally:
            store.close()


@pytest.mark.postgres
def test_procrastinate_defers_a_job_into_the_schema_the_revision_made():
    with fresh_database("mw_queue_defer") as url:
        open_store(url).close()
        app = App(connector=SyncPsycopgConnector(conninfo=_queue_url(url),
                                                 kwargs={"options": "-c search_path=procrastinate"}))

        @app.task(name="probe", queue="checks", queueing_lock="probe::token")
        def probe() -> None:  # pragma: no cover - deferred, never run
            pass

        with app.open():
            job_id = probe.defer()
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                job = conn.execute(text("SELECT queue_name, task_name, status FROM procrastinate.procrastinate_jobs "
                                        "WHERE id = :id"), {"id": job_id}).one()
                assert tuple(job) == ("checks", "probe", "todo")
                events = conn.execute(text("SELECT type FROM procrastinate.procrastinate_events WHERE job_id = :id"),
                                      {"id": job_id}).scalars().all()
                assert [str(e) for e in events] == ["deferred"]  # the schema's triggers run
        finally:
            store.close()


@pytest.mark.postgres
def test_postgres_downgrade_to_0012_drops_the_queue_and_upgrade_brings_it_back():
    with fresh_database("mw_queue_down") as url:
        open_store(url).close()
        command.downgrade(alembic_config(url), "0012")
        store = open_store(url, migrate=False)
        try:
            with store.engine.connect() as conn:
                assert conn.execute(text("SELECT to_regnamespace('procrastinate')")).scalar() is None
                assert _schemas_of(conn, "backoff_waits") == []
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0012"]
        finally:
            store.close()
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                assert _schemas_of(conn, "procrastinate_jobs") == ["procrastinate"]
        finally:
            store.close()


def test_sqlite_gets_the_backoff_table_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'mailwarden.db'}"
    store = open_store(url)
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert "backoff_waits" in tables
        assert not {t for t in tables if t.startswith("procrastinate")}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        store.close()
    command.downgrade(alembic_config(url), "0012")
    store = open_store(url, migrate=False)
    try:
        assert "backoff_waits" not in set(inspect(store.engine).get_table_names())
    finally:
        store.close()
