"""The files mailwarden keeps beside its SQLite database (hardening issue, item 13). The database, its WAL and its
shared-memory file were created 0644 under the usual umask: results, transcripts and the encrypted refresh tokens
for every user of the host. A deleted token key file was replaced by a new key at the next start, before the
fingerprint check refused that key: the operator restoring the original from backup found a wrong file in its place.
A key file that was a directory or a FIFO was a traceback or a hang."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mailwarden.errors import TokenStoreError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import tokenstore
from mailwarden.monitor.db import open_store
from mailwarden.monitor.tokenstore import key_file_for, load_cipher, verify_fingerprint

CONFIG = """\
database: sqlite:///data/mailwarden.db
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555}
apps:
  helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_PRIVATE_SECRET}
integrations:
  - {name: helpdesk-support, app: helpdesk, flow: app, mailbox: support@contoso.com, checks: [secret_expiry]}
"""


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return config_mod.load(path)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def first_start(cfg) -> str:
    """What ``open_runtime`` does about the key: the store, the key (generated), its fingerprint recorded."""
    store = open_store(cfg.database_url())
    try:
        cipher = load_cipher(cfg)
        verify_fingerprint(store, cipher)
        return cipher.fingerprint
    finally:
        store.close()


def test_a_new_database_its_wal_shm_and_key_are_readable_by_the_owner_only(cfg, umask_022):
    """Under umask 022 SQLite created the database, -wal and -shm 0644 (the key file was already 0600)."""
    store = open_store(cfg.database_url())
    try:
        store.meta.set_meta("probe", "x")
        verify_fingerprint(store, load_cipher(cfg))
        db = Path(cfg.database_url()[len("sqlite:///"):])
        files = {p.name: mode(p) for p in db.parent.iterdir()}
        assert {"mailwarden.db", "mailwarden.db-wal", "mailwarden.db-shm", "mailwarden.key"} <= set(files), files
        assert all(m == 0o600 for m in files.values()), {n: oct(m) for n, m in files.items()}
    finally:
        store.close()


def test_a_deleted_key_file_is_not_replaced_by_a_new_one(cfg):
    """The database holds the key's fingerprint: a missing key file is an error that says so and how to restore
    it, and no new key file appears in its place."""
    fingerprint = first_start(cfg)
    key_file = key_file_for(cfg)
    original = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(TokenStoreError) as info:
        load_cipher(cfg)
    message = info.value.message()
    assert f"the token key file {key_file} is missing" in message and fingerprint in message, message
    assert "Restore mailwarden.key from your backup" in message, message
    assert original.decode().strip() not in message
    assert not key_file.exists()
    key_file.write_bytes(original)  # restored: it starts again
    store = open_store(cfg.database_url())
    try:
        verify_fingerprint(store, load_cipher(cfg))
    finally:
        store.close()


def test_the_cli_says_the_key_is_missing_and_leaves_no_new_one(cfg, tmp_path):
    """The same through ``mailwarden check``: exit 3, the message, no traceback, no key file written."""
    first_start(cfg)
    key_file = key_file_for(cfg)
    key_file.unlink()
    done = subprocess.run([sys.executable, "-c", "from mailwarden.monitor.cli import main; main()", "check", "-c",
                           str(tmp_path / "mailwarden.yaml"), "--no-alerts"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MW_PRIVATE_SECRET": "x" * 12})
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    assert "is missing" in out and "Traceback" not in out, out
    assert not key_file.exists()


def test_a_key_file_created_meanwhile_is_used_never_overwritten(cfg, monkeypatch):
    """Two starts at once: the other wrote the key file after this one found none. Creating it with O_EXCL was a
    FileExistsError traceback; overwriting it would orphan the other's tokens."""
    key_file = key_file_for(cfg)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    theirs = Fernet.generate_key()
    real = Fernet.generate_key

    def racing() -> bytes:
        key_file.write_bytes(theirs + b"\n")
        return real()

    monkeypatch.setattr(tokenstore.Fernet, "generate_key", staticmethod(racing))
    cipher = load_cipher(cfg)
    assert key_file.read_bytes() == theirs + b"\n"
    assert cipher.fingerprint == tokenstore.TokenCipher(theirs).fingerprint
    assert [p.name for p in key_file.parent.iterdir()] == ["mailwarden.key"]  # no temporary file left


def test_a_key_file_that_is_a_directory_is_a_clear_error(cfg):
    """It was an IsADirectoryError traceback."""
    key_file = key_file_for(cfg)
    key_file.mkdir(parents=True)
    with pytest.raises(TokenStoreError, match="is a directory, not a regular file"):
        load_cipher(cfg)


def test_a_key_file_that_is_a_fifo_is_a_clear_error_not_a_hang(cfg, tmp_path):
    """Reading it blocked for good (run in a child with a deadline, so the old code fails instead of hanging)."""
    key_file = key_file_for(cfg)
    key_file.parent.mkdir(parents=True)
    os.mkfifo(key_file)
    code = ("import sys\nfrom mailwarden.monitor import config, tokenstore\nfrom mailwarden.errors import "
            "TokenStoreError\ntry:\n    tokenstore.load_cipher(config.load(sys.argv[1]))\nexcept TokenStoreError as "
            "exc:\n    print(exc.message())\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "mailwarden.yaml")], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO key file hung")
    assert "is a FIFO (named pipe), not a regular file" in done.stdout, done.stdout + done.stderr
