"""Encryption of the delegated token caches (Fernet).

The key comes from ``token_key`` (env:/file: reference). With SQLite and no ``token_key``, a key file is
generated beside the database with mode 0600; PostgreSQL deployments must name the key, since every
instance must share it. A fingerprint of the key is stored in the database, so starting with the wrong
key fails at once with a clear message instead of producing unreadable tokens later.

The key file is generated only for a database that has never held a key: once the database holds a fingerprint
(or a token), a missing key file is an error saying so and how to restore it, never a new key written in its place
(which the fingerprint check then refused, while the restore found the wrong file there). It is never overwritten:
written to a temporary file and linked into place only if no file has that name.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from cryptography.fernet import Fernet, InvalidToken

from mailwarden.errors import SecretReferenceError, TokenStoreError
from mailwarden.monitor.config import MAX_SECRET_BYTES, Config, Unreadable, read_capped, resolve_ref
from mailwarden.redact import register_secret

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store

FINGERPRINT_KEY = "token_key_fingerprint"


class TokenCipher:
    def __init__(self, key: bytes | str):
        key_bytes = key.encode() if isinstance(key, str) else key
        try:
            self._fernet = Fernet(key_bytes)
        except (ValueError, TypeError):
            raise TokenStoreError("the token store key is not a valid Fernet key (32 url-safe base64 bytes)",
                                  hint="Generate one with: python -c 'from cryptography.fernet import "
                                       "Fernet; print(Fernet.generate_key().decode())'") from None
        register_secret(key_bytes.decode())
        self.fingerprint = "sha256:" + hashlib.sha256(b"mailwarden-token-key:" + key_bytes).hexdigest()[:16]
        self._derive_base = hashlib.sha256(b"mailwarden-derive:" + key_bytes).digest()

    def derive(self, purpose: str) -> bytes:
        """A key for another purpose (e.g. signing reauthorisation links), bound to this token key."""
        return hmac.new(self._derive_base, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, data: bytes) -> bytes:
        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise TokenStoreError("a stored token cache cannot be decrypted with the configured token key",
                                  hint="Start with the key the tokens were written with, or re-authorise") from None


def key_file_for(cfg: Config) -> Path | None:
    url = cfg.database_url()
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    db = Path(url[len("sqlite:///"):])
    return db.with_name(db.stem + ".key")


def load_cipher(cfg: Config) -> TokenCipher:
    if cfg.token_key:
        try:
            return TokenCipher(resolve_ref(cfg.token_key, cfg.base_dir, what="token_key"))
        except SecretReferenceError as exc:
            raise TokenStoreError(exc.what, where="token_key", hint=exc.hint) from None
    key_file = key_file_for(cfg)
    if key_file is None:
        raise TokenStoreError("'token_key' is required with a PostgreSQL database: every instance must share it",
                              where="token_key", hint="Set token_key: env:MAILWARDEN_TOKEN_KEY")
    key = _read_key_file(key_file)
    if key is None:
        _refuse_new_key(cfg, key_file)
        key = _create_key_file(key_file)
    return TokenCipher(key)


def _read_key_file(key_file: Path) -> bytes | None:
    """The key in ``key_file``; None when there is no such file."""
    try:
        return read_capped(key_file, MAX_SECRET_BYTES).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenStoreError(f"the token key file {key_file} cannot be read ({exc.strerror})",
                              where="token_key", hint="Check that mailwarden's user may read it") from None
    except Unreadable as exc:
        raise TokenStoreError(f"the token key file {key_file} {exc.reason}", where="token_key",
                              hint="Restore the key file from your backup") from None


def _stored_key(db: Path) -> str | None:
    """What the SQLite database ``db`` says about a key it was written with: its fingerprint, "tokens" when it holds
    token caches but no fingerprint, None when it holds neither (or does not exist). Read only: nothing is created."""
    if not db.is_file() or db.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=10)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (FINGERPRINT_KEY,)).fetchone()
                if row is not None:
                    return str(row[0])
            if "token_caches" in tables and conn.execute("SELECT 1 FROM token_caches LIMIT 1").fetchone():
                return "tokens"
    except sqlite3.Error as exc:
        raise TokenStoreError(f"the token key file is missing and the database {db} cannot be read to tell whether "
                              f"it was written with a key ({exc})", where="token_key",
                              hint="Restore the key file beside the database, or check the database file") from None
    return None


def _refuse_new_key(cfg: Config, key_file: Path) -> None:
    db = Path(cfg.database_url()[len("sqlite:///"):].split("?", 1)[0])
    stored = _stored_key(db)
    if stored is None:
        return
    held = "tokens encrypted with a key" if stored == "tokens" else f"tokens encrypted with the key {stored}"
    raise TokenStoreError(
        f"the token key file {key_file} is missing, but the database {db} holds {held}: a new key could not "
        "decrypt them, so none is generated",
        where="token_key",
        hint=f"Restore {key_file.name} from your backup beside the database (mode 0600), or set token_key to that "
             "key. To start over with a new key instead, move the database away too: every delegated integration "
             "then needs 'mailwarden reauth'")


def _create_key_file(key_file: Path) -> bytes:
    """A new key in ``key_file`` (0600), never replacing a file of that name: one created meanwhile is used."""
    key = Fernet.generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, key_file)  # fails if the name exists: never overwrites
        except FileExistsError:
            existing = _read_key_file(key_file)
            if existing is None:
                raise TokenStoreError(f"the token key file {key_file} vanished while it was created",
                                      where="token_key", hint="Start mailwarden again") from None
            return existing
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key


def verify_fingerprint(store: Store, cipher: TokenCipher) -> None:
    """First start: remember the key's fingerprint. Later starts: refuse a different key."""
    stored = store.meta.get_meta(FINGERPRINT_KEY)
    if stored is None:
        store.meta.set_meta(FINGERPRINT_KEY, cipher.fingerprint)
    elif stored != cipher.fingerprint:
        raise TokenStoreError(
            f"the token key does not match the one this database was written with "
            f"(configured {cipher.fingerprint}, database {stored})",
            where="token_key",
            hint="Use the original key, or rotate it with 'mailwarden token-key rotate'",
        )
