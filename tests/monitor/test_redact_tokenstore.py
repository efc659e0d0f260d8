"""Secrets never leave the process: the redactor, and the encrypted token store with its key checks."""

import os
import stat

import pytest
from cryptography.fernet import Fernet

from mailwarden.errors import TokenStoreError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import open_store
from mailwarden.monitor.tokenstore import TokenCipher, key_file_for, load_cipher, verify_fingerprint
from mailwarden.redact import MASK, redact, redact_obj, register_secret

XOAUTH = "dXNlcj1zdXBwb3J0QGNvbnRvc28uY29tAWF1dGg9QmVhcmVy"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize("text,leak", [
    (f"Authorization: Bearer {JWT}", JWT),
    (f"token {JWT} in a sentence", JWT),
    ("client_secret=abc~DEF123456&grant_type=client_credentials", "abc~DEF123456"),
    ('{"refresh_token": "0.AAAA-long-refresh-token-value"}', "0.AAAA-long-refresh-token-value"),
    ("mailto://user:pa55word@relay.contoso.com", "pa55word"),
    ("postgresql+psycopg://mw:hunter22@db/mw", "hunter22"),
    ("https://app/auth/callback?code=0.AbCdEf123&state=xyz", "0.AbCdEf123"),
    ("AUTHENTICATE XOAUTH2 " + XOAUTH, XOAUTH),
])
def test_patterns(text, leak):
    out = redact(text)
    assert leak not in out and MASK in out


def test_registered_secret_is_masked_anywhere():
    register_secret("Q7v8Q~someRegisteredSecretValue")
    assert "someRegistered" not in redact("failed with Q7v8Q~someRegisteredSecretValue inside")
    assert redact_obj({"a": ["x Q7v8Q~someRegisteredSecretValue"]}) == {"a": [f"x {MASK}"]}


def test_error_codes_stay_readable():
    text = '{"error": {"code": "ErrorAccessDenied", "message": "Access to OData is disabled."}}'
    assert redact(text) == text


def _cfg(tmp_path, extra=""):
    (tmp_path / "mailwarden.yaml").write_text(f"database: sqlite:///state/mw.db\n{extra}")
    return config_mod.load(tmp_path / "mailwarden.yaml")


def test_sqlite_key_file_is_generated_0600_and_reused(tmp_path):
    cfg = _cfg(tmp_path)
    first = load_cipher(cfg)
    key_file = key_file_for(cfg)
    assert key_file == tmp_path / "state" / "mw.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_cipher(cfg).fingerprint == first.fingerprint
    assert first.decrypt(first.encrypt(b"cache")) == b"cache"


def test_postgres_requires_a_named_key(tmp_path):
    (tmp_path / "mailwarden.yaml").write_text("database: postgresql+psycopg://u@127.0.0.1/x\n")
    with pytest.raises(TokenStoreError, match="required with a PostgreSQL"):
        load_cipher(config_mod.load(tmp_path / "mailwarden.yaml"))


def test_wrong_key_fails_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_TEST_KEY", Fernet.generate_key().decode())
    cfg = _cfg(tmp_path, "token_key: env:MW_TEST_KEY\n")
    store = open_store(cfg.database_url())
    verify_fingerprint(store, load_cipher(cfg))
    monkeypatch.setenv("MW_TEST_KEY", Fernet.generate_key().decode())
    with pytest.raises(TokenStoreError, match="does not match"):
        verify_fingerprint(store, load_cipher(cfg))
    store.close()


def test_bad_key_and_foreign_ciphertext(tmp_path):
    with pytest.raises(TokenStoreError, match="not a valid Fernet key"):
        TokenCipher("short")
    a, b = TokenCipher(Fernet.generate_key()), TokenCipher(Fernet.generate_key())
    with pytest.raises(TokenStoreError, match="cannot be decrypted"):
        b.decrypt(a.encrypt(b"x"))
