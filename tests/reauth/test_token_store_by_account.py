"""The token store keyed on (tenant, app, account) (migration 0009): a token stored per integration before the
upgrade keeps working without a new sign-in, and becomes the token of every integration of that account. On
SQLite and PostgreSQL."""

from __future__ import annotations

import msal
from sqlalchemy import text

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import Store, upgrade
from mailwarden.monitor.tokens import TokenProvider
from mailwarden.monitor.tokenstore import TokenCipher
from tests.reauth.test_token_store_kind import BLOB, T0, _migrate, empty_engine  # noqa: F401


def test_0009_keeps_tokens_stored_per_integration(empty_engine, tmp_path):  # noqa: F811
    from alembic import command

    _migrate(empty_engine, command.upgrade, "0008")
    from cryptography.fernet import Fernet

    cipher = TokenCipher(Fernet.generate_key())
    cache = msal.SerializableTokenCache()
    cache.deserialize('{"RefreshToken": {"x": {"secret": "rt-of-anna"}}}')
    blob = cipher.encrypt(cache.serialize().encode())
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO token_caches (integration, ciphertext, key_fingerprint, account, updated_at, "
                          "public_client) VALUES ('support', :c, :f, 'anna@contoso.com', :t, false)"),
                     {"c": blob, "f": cipher.fingerprint, "t": T0.replace(tzinfo=None)})
    upgrade(empty_engine)
    (tmp_path / "s").write_text("abc8Q~secret")
    cfg = config_mod.Config.model_validate({
        "database": "sqlite:///unused.db",
        "tenants": {"t": {"tenant_id": "11111111-2222-3333-4444-555555555555"}},
        "apps": {"a": {"tenant": "t", "client_id": "66666666-7777-8888-9999-000000000000", "secret": "file:s"}},
        "integrations": [
            {"name": "support", "app": "a", "flow": "delegated", "account": "anna@contoso.com",
             "mailbox": "support@contoso.com", "checks": ["token", "pop"]},
            {"name": "billing", "app": "a", "flow": "delegated", "account": "Anna@contoso.com",
             "mailbox": "billing@contoso.com", "checks": ["token", "pop"]},
            {"name": "other", "app": "a", "flow": "delegated", "account": "bob@contoso.com",
             "mailbox": "other@contoso.com", "checks": ["token"]},
        ]})
    cfg.base_dir = tmp_path
    store = Store(empty_engine)
    tokens = TokenProvider(cfg, store, cipher)
    # the integration that stored it adopts its row; the other integration of the account finds it then
    assert "rt-of-anna" in tokens.load_cache("support").serialize()
    assert "rt-of-anna" in TokenProvider(cfg, store, cipher).load_cache("billing").serialize()
    assert TokenProvider(cfg, store, cipher).load_cache("other") is None  # another account: not its token
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT token_key, integration FROM token_caches")).all()
    assert rows == [("11111111-2222-3333-4444-555555555555:66666666-7777-8888-9999-000000000000:anna@contoso.com",
                     "support")]
