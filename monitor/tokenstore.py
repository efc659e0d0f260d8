"""Encryption of the delegated token caches (Fernet).

The key comes from ``token_key`` (env:/file: reference). With SQLite and no ``token_key``, a key file is
generated beside the database with mode 0600; PostgreSQL deployments must name the key, since every
instance must share it. A fingerprint of the key is stored in the database, so starting with the wrong
key fails at once with a clear message instead of producing unreadable tokens later.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken

from mailwarden.errors import SecretReferenceError, TokenStoreError
from mailwarden.monitor.config import Config, resolve_ref
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
    if key_file.exists():
        return TokenCipher(key_file.read_bytes().strip())
    key = Fernet.generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return TokenCipher(key)


def verify_fingerprint(store: Store, cipher: TokenCipher) -> None:
    """First start: remember the key's fingerprint. Later starts: refuse a different key."""
    stored = store.get_meta(FINGERPRINT_KEY)
    if stored is None:
        store.set_meta(FINGERPRINT_KEY, cipher.fingerprint)
    elif stored != cipher.fingerprint:
        raise TokenStoreError(
            f"the token key does not match the one this database was written with "
            f"(configured {cipher.fingerprint}, database {stored})",
            where="token_key",
            hint="Use the original key, or rotate it with 'mailwarden token-key rotate'",
        )
