"""The token store's record of a sign-in beside its encrypted cache (migration 0007): whether the refresh token
belongs to a public client, and whose object id was accepted. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, text

from mailwarden.monitor.db import Store, alembic_config, make_engine, upgrade
from tests.pg import fresh_database

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
BLOB = bytes(range(256)) * 2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request, tmp_path):
    """An engine on an empty database (its own PostgreSQL database: the shared one is already migrated)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'before-0007.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_database("mailwarden_0007") as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _migrate(engine, action, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def _columns(engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("token_caches")}


def test_0007_upgrades_a_database_written_before_it(empty_engine):
    """Rows stored by 0006 read back as confidential with no recorded user, exactly as they were refreshed."""
    _migrate(empty_engine, command.upgrade, "0006")
    assert "public_client" not in _columns(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO token_caches (integration, ciphertext, key_fingerprint, account, updated_at) "
                          "VALUES (:i, :c, 'sha256:aa', :a, :t)"),
                     [{"i": "helpdesk", "c": BLOB, "a": "mail@contoso.com", "t": T0.replace(tzinfo=None)},
                      {"i": "oracle", "c": BLOB[::-1], "a": "b2c@contoso.com", "t": T0.replace(tzinfo=None)}])
    upgrade(empty_engine)
    assert {"public_client", "oid"} <= _columns(empty_engine)
    st = Store(empty_engine)
    # adopted by its integration (migration 0009)
    row = st.token_caches.load_token_cache("t:c:mail@contoso.com", "helpdesk")
    assert (bytes(row.ciphertext), row.account, row.public_client, row.oid) == (BLOB, "mail@contoso.com", False, None)
    assert st.token_caches.load_token_cache("t:c:b2c@contoso.com", "oracle").public_client is False
    # the new columns are usable at once, and a second upgrade changes nothing
    st.token_caches.save_token_cache("t:c:b2c@contoso.com", "oracle", BLOB, "sha256:aa", "b2c@contoso.com", T0,
                                     public_client=True, oid="oid-1")
    upgrade(empty_engine)
    row = st.token_caches.load_token_cache("t:c:b2c@contoso.com")
    assert (row.public_client, row.oid) == (True, "oid-1")
    # and it can be taken back (the rows keep their caches)
    _migrate(empty_engine, command.downgrade, "0006")
    assert "public_client" not in _columns(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM token_caches")).scalar() == 2


def test_a_refresh_keeps_the_sign_in_kind_and_a_new_sign_in_replaces_it(store):  # noqa: F811
    def save(name, *args, **kwargs):
        store.token_caches.save_token_cache(f"key:{name}", name, *args, **kwargs)

    def load(name):
        return store.token_caches.load_token_cache(f"key:{name}")

    save("helpdesk", BLOB, "sha256:aa", "anna@contoso.com", T0, public_client=True, oid="oid-anna")
    save("helpdesk", BLOB[::-1], "sha256:aa", "anna@contoso.com", T0 + timedelta(minutes=5))  # rotated by a refresh
    row = load("helpdesk")
    assert (bytes(row.ciphertext), row.public_client, row.oid) == (BLOB[::-1], True, "oid-anna")
    save("helpdesk", BLOB, "sha256:aa", "anna@contoso.com", T0 + timedelta(minutes=9), public_client=False, oid=None)
    row = load("helpdesk")
    assert (row.public_client, row.oid, row.updated_at) == (False, None, T0 + timedelta(minutes=9))
    save("new", BLOB, "sha256:aa", None, T0)  # a first save without a sign-in's facts: confidential, nobody
    assert (load("new").public_client, load("new").oid) == (False, None)
    # re-encrypting with a new key keeps them too
    store.token_caches.rekey_token_caches(lambda b: b[::-1], "sha256:bb", "token_key_fingerprint")
    assert load("helpdesk").public_client is False
    save("helpdesk", BLOB, "sha256:bb", "anna@contoso.com", T0, public_client=True, oid="oid-anna")
    store.token_caches.rekey_token_caches(lambda b: b[::-1], "sha256:cc", "token_key_fingerprint")
    assert (load("helpdesk").public_client, load("helpdesk").oid) == (
        True, "oid-anna")
