"""Tokens through MSAL, the way each integration gets them.

- App-only: client credentials with the app's secret or certificate. Mailbox checks reuse one
  long-lived MSAL app object per app (its cache holds the token until it nears expiry); the token
  check uses a fresh object and an empty cache, so it always makes a real round trip.
- Delegated: the integration's refresh token lives in an MSAL SerializableTokenCache, encrypted in
  the database. Every use may rotate the refresh token, so the cache is saved whenever it changed.

MSAL calls are blocking (requests): callers run them in a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mailwarden.checks.network import http_session
from mailwarden.checks.replies import (  # noqa: F401 - REPLIES, TokenReply re-exported
    REPLIES,
    TokenReply,
    record_token_replies,
    record_token_requests,
)
from mailwarden.durations import retry_after  # noqa: F401 - re-exported
from mailwarden.endpoints import Endpoints, scope_prefixes  # noqa: F401 - re-exported
from mailwarden.errors import ConfigError, NoRefreshToken, StorageError  # noqa: F401 - NoRefreshToken re-exported
from mailwarden.monitor.config import Config, IntegrationConfig, resolve_ref
from mailwarden.monitor.db_signins import OwnRequestRecorder
from mailwarden.monitor.tokenstore import TokenCipher

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store

log = logging.getLogger("mailwarden.tokens")
_APP_TOKEN_SKEW_S = 300  # a cached token this close to expiry is refreshed first
DISCOVERY_TTL_S = 3600.0  # how long an authority's OpenID discovery document is reused
_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class StoredToken:
    """What the token store records beside a delegated cache: whether its refresh token was issued to a public
    client (refreshed without the app's secret: with one, Entra ID answers AADSTS700025), the object id of the
    user whose sign-in was accepted, and the configured account it was accepted for."""

    public_client: bool = False
    oid: str | None = None
    account: str | None = None


class _DiscoveryCache:
    """The authorities' OpenID discovery documents, shared by the MSAL objects of one TokenProvider.

    MSAL fetches the document whenever an application object is built, and mailwarden builds one per token
    check and per delegated token (a fresh object keeps MSAL's per-object replay of HTTP 400s from hiding a
    reauthorisation). Without this, every such call paid a round trip to the authority (measured by bench/).
    Only successful answers are kept; MSAL's own HTTP cache is left alone (it also holds that 400 replay)."""

    def __init__(self, ttl_s: float = DISCOVERY_TTL_S):
        self.ttl_s = ttl_s
        self._docs: dict[str, tuple[float, requests.Response]] = {}
        self._lock = threading.Lock()

    def wrap(self, session: requests.Session) -> requests.Session:
        fetch = session.get

        def get(url, *args, **kwargs):
            if not str(url).endswith(_DISCOVERY_SUFFIX) or kwargs.get("params"):
                return fetch(url, *args, **kwargs)
            with self._lock:
                hit = self._docs.get(url)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            resp = fetch(url, *args, **kwargs)
            if 200 <= resp.status_code < 300:
                _ = resp.content  # read it now: the cached response is shared between threads
                with self._lock:
                    self._docs[url] = (time.monotonic(), resp)
            return resp

        session.get = get  # type: ignore[method-assign]
        return session


def certificate_thumbprint(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - x5t is defined as SHA-1


ACCESS_MARGIN_S = 300.0  # MSAL refreshes an access token this long before it expires


class TokenProvider:
    def __init__(self, config: Config, store: Store | None, cipher: TokenCipher | None,
                 *, timeout_s: float = 30.0):
        self.config = config
        self.store = store
        self.cipher = cipher
        self.endpoints = config.endpoints_resolved()
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._apps: dict[tuple[str, str], msal.ConfidentialClientApplication] = {}  # (app, tenant) ->
        self._caches: dict[str, msal.SerializableTokenCache] = {}
        self._stored: dict[str, StoredToken] = {}  # what the row says beside each cache held in _caches
        self._integration_locks: dict[str, threading.Lock] = {}
        # The access token a delegated check presents, while it has more than MSAL's refresh margin left:
        # MSAL would return the same token from its cache, after building an app object and reading the
        # client secret (0.3-0.8 ms CPU per mailbox check; bench/). Dropped whenever the cache is saved.
        self._access: dict[tuple[str, tuple[str, ...]], tuple[float, dict[str, Any]]] = {}
        self._discovery = _DiscoveryCache()
        # Every token request's client-request-id, in the database before the request is sent: the sign-in log's
        # correlationId, by which mailwarden's own sign-ins are left out of the consuming system's (monitor.signins)
        self.own_requests = OwnRequestRecorder(store)
        # One session (one connection pool) for every MSAL object of this provider: a fresh MSAL object per
        # token check no longer means a fresh TCP + TLS handshake per token request (bench/).
        self._session = record_token_requests(record_token_replies(self._discovery.wrap(http_session(self.endpoints))),
                                              self.own_requests)
        pool = config.concurrency.total + 8
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def _http(self) -> requests.Session:
        return self._session

    # -- building MSAL objects -----------------------------------------------------------------
    def client_credential(self, app_name: str) -> str | dict[str, str]:
        """The app's secret, or its certificate as MSAL wants it. Raises SecretReferenceError."""
        app = self.config.apps[app_name]
        if app.secret:
            return resolve_ref(app.secret, self.config.base_dir, what=f"apps.{app_name}.secret")
        if app.certificate is None:  # observe_only: config validation keeps it from every sign-in
            raise ConfigError(f"apps.{app_name} is observe_only: mailwarden holds no credential to sign in with")
        key = resolve_ref(app.certificate.key, self.config.base_dir, what=f"apps.{app_name}.certificate.key")
        cert = resolve_ref(app.certificate.cert, self.config.base_dir, what=f"apps.{app_name}.certificate.cert")
        return {"private_key": key, "thumbprint": certificate_thumbprint(cert), "public_certificate": cert}

    def new_app(self, app_name: str, cache: msal.TokenCache | None = None, *,
                tenant_name: str | None = None) -> msal.ConfidentialClientApplication:
        """An MSAL object of the app that asks ``tenant_name``'s authority (default: the app's home tenant; another
        tenant for a multitenant app used there: ``Config.tenant_name_of``)."""
        app = self.config.apps[app_name]
        tenant = self.config.tenants[tenant_name or app.tenant]
        kwargs: dict[str, Any] = {}
        if self.endpoints.cloud == "custom":
            kwargs["instance_discovery"] = False
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=self.client_credential(app_name),
            authority=self.endpoints.authority_for(tenant.tenant_id),
            http_client=self._http(),
            token_cache=cache if cache is not None else msal.TokenCache(),
            timeout=self.timeout_s,
            **kwargs,
        )

    def new_public_app(self, app_name: str, cache: msal.TokenCache, *,
                       tenant_name: str | None = None) -> msal.PublicClientApplication:
        app = self.config.apps[app_name]
        tenant = self.config.tenants[tenant_name or app.tenant]
        kwargs: dict[str, Any] = {"instance_discovery": False} if self.endpoints.cloud == "custom" else {}
        return msal.PublicClientApplication(
            app.client_id, authority=self.endpoints.authority_for(tenant.tenant_id),
            http_client=self._http(), token_cache=cache, timeout=self.timeout_s, **kwargs)

    def _shared_app(self, app_name: str, tenant_name: str | None = None) -> msal.ConfidentialClientApplication:
        key = (app_name, tenant_name or self.config.apps[app_name].tenant)
        with self._lock:
            existing = self._apps.get(key)
        if existing is not None:
            return existing
        created = self.new_app(app_name, tenant_name=key[1])
        with self._lock:
            return self._apps.setdefault(key, created)

    def forget_app(self, app_name: str) -> None:
        with self._lock:
            for key in [k for k in self._apps if k[0] == app_name]:
                self._apps.pop(key, None)

    # -- app-only ----------------------------------------------------------------------------
    def app_token(self, app_name: str, resource: str, *, fresh: bool = False,
                  tenant_name: str | None = None) -> dict[str, Any]:
        """Client credentials for ``<resource>/.default`` in ``tenant_name`` (default: the app's home tenant).
        ``fresh`` forces a token-endpoint round trip."""
        scopes = [f"{resource}/.default"]
        tenant_name = tenant_name or self.config.apps[app_name].tenant
        if fresh:
            return self.new_app(app_name, tenant_name=tenant_name).acquire_token_for_client(scopes)
        # One caller asks, the others wait and find the token in the cache: the checks of an app start together
        # and each used to ask the token endpoint when the cache was empty (bench/).
        with self._integration_lock(f"app:{app_name}:{tenant_name}:{resource}"):
            return self._shared_app(app_name, tenant_name).acquire_token_for_client(scopes)

    # -- delegated ---------------------------------------------------------------------------
    def key_of(self, integ: IntegrationConfig | str) -> str:
        """The token store's key of an integration's refresh token: (tenant, app, account). The integrations of one
        account on one app share it: one revocation is one failure, one reauthorisation fixes them all."""
        if isinstance(integ, str):
            integ = self.config.integration(integ)
        return token_key(self.config, integ)

    def _integration_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._integration_locks.setdefault(name, threading.Lock())

    def load_cache(self, integration: str) -> msal.SerializableTokenCache | None:
        """The token cache the integration uses (its account's), read from the store once."""
        key = self.key_of(integration)
        with self._lock:
            cached = self._caches.get(key)
        if cached is not None:
            return cached
        if self.store is None or self.cipher is None:
            return None
        row = self.store.token_caches.load_token_cache(key, integration)
        if row is None:
            return None
        cache = msal.SerializableTokenCache()
        cache.deserialize(self.cipher.decrypt(row.ciphertext).decode())
        with self._lock:
            held = self._caches.setdefault(key, cache)
            if held is cache:
                self._stored[key] = StoredToken(bool(row.public_client), row.oid, row.account)
            return held

    def stored_row(self, integration: str):
        """The token store's row for the integration's account (None when nothing is stored)."""
        if self.store is None:
            return None
        return self.store.token_caches.load_token_cache(self.key_of(integration), integration)

    def stored_token(self, integration: str) -> StoredToken | None:
        """What the token store records about the integration's sign-in (read from the database, so a sign-in
        stored by another instance counts), or None when nothing is stored."""
        if self.store is None:
            return None
        row = self.store.token_caches.load_token_cache(self.key_of(integration), integration)
        return None if row is None else StoredToken(bool(row.public_client), row.oid, row.account)

    def save_cache(self, integ: IntegrationConfig, cache: msal.SerializableTokenCache, *,
                   signed_in: StoredToken | None = None) -> None:
        """Store the cache. ``signed_in``: a new sign-in (its kind and user replace the stored ones); None: the
        same sign-in's cache after a refresh rotated its tokens (the stored kind and user stay)."""
        if self.store is None or self.cipher is None:
            raise RuntimeError("no token store configured")
        identity: dict[str, Any] = {}
        if signed_in is not None:
            identity = {"public_client": signed_in.public_client, "oid": signed_in.oid}
        key = self.key_of(integ)
        self.store.token_caches.save_token_cache(key, integ.name, self.cipher.encrypt(cache.serialize().encode()),
                                                 self.cipher.fingerprint, integ.account, datetime.now(UTC), **identity)
        cache.has_state_changed = False
        with self._lock:
            self._caches[key] = cache
            if signed_in is not None:
                self._stored[key] = StoredToken(signed_in.public_client, signed_in.oid, integ.account)
            else:
                kept = self._stored.get(key) or StoredToken()
                self._stored[key] = StoredToken(kept.public_client, kept.oid, integ.account)
            self._forget_access(key)

    def _forget_access(self, key: str) -> None:
        for held in [k for k in list(self._access) if k[0] == key]:
            self._access.pop(held, None)

    def delegated_token(self, integ: IntegrationConfig, scopes: list[str], *,
                        force_refresh: bool = False) -> dict[str, Any]:
        """A delegated token from the stored refresh token. Raises NoRefreshToken when none is stored."""
        token = self.key_of(integ)
        key = (token, tuple(sorted(scopes)))
        if not force_refresh:
            held = self._access.get(key)
            if held is not None and held[0] > time.monotonic():
                return held[1]
        with self._integration_lock(token):
            result = self._delegated(integ, scopes, force_refresh)
            if "access_token" not in result and self._reload_cache(integ.name):
                # refused with the cache this process holds: another instance (a reauthorisation completed on
                # a follower, `mailwarden reauth`) may have stored a newer one since
                result = self._delegated(integ, scopes, force_refresh)
            expires_in = result.get("expires_in")
            if "access_token" in result and isinstance(expires_in, int | float):
                self._access[key] = (time.monotonic() + float(expires_in) - ACCESS_MARGIN_S, result)
            return result

    def _delegated(self, integ: IntegrationConfig, scopes: list[str], force_refresh: bool) -> dict[str, Any]:
        cache = self.load_cache(integ.name)
        if cache is None:
            raise NoRefreshToken(integ.name)
        with self._lock:
            stored = self._stored.get(self.key_of(integ)) or StoredToken()
        # A fresh app object for every call: MSAL replays a cached HTTP 400 for 60 s per object,
        # which would hide a reauthorisation that just happened. A public client's refresh token is redeemed
        # without the app's secret (with it, Entra ID answers AADSTS700025).
        tenant_name = self.config.tenant_name_of(integ)
        app: msal.ClientApplication = (
            self.new_public_app(integ.app, cache, tenant_name=tenant_name) if stored.public_client
            else self.new_app(integ.app, cache, tenant_name=tenant_name))
        account = self._signed_in_account(app, integ, stored)
        if account is None:
            raise NoRefreshToken(integ.name)
        result = app.acquire_token_silent_with_error(scopes, account, force_refresh=force_refresh)
        if result is None:
            raise NoRefreshToken(integ.name)
        if cache.has_state_changed:
            try:
                self.save_cache(integ, cache)
            except StorageError as exc:
                # the token works; only its rotated refresh token is not written yet: it stays in this process's
                # cache and is written at the next use once the database is back (serialize() cleared the flag)
                cache.has_state_changed = True
                log.warning("token cache not saved: the database is unavailable; kept in memory",
                            extra={"integration": integ.name, "error": exc.message()})
        return result

    @staticmethod
    def _signed_in_account(app: msal.ClientApplication, integ: IntegrationConfig,
                           stored: StoredToken) -> dict[str, Any] | None:
        """The cache's account for the configured one: by sign-in name, or, when the configured account is
        another of the user's addresses (UPN anna.smith@, account anna@), by the object id recorded when the
        sign-in was accepted for this very account."""
        accounts = app.get_accounts(username=integ.account)
        if accounts:
            return accounts[0]
        if not stored.oid or (stored.account or "").lower() != (integ.account or "").lower():
            return None  # the configured account changed since the sign-in: that token is not its
        return next((a for a in app.get_accounts() if a.get("local_account_id") == stored.oid), None)

    def _reload_cache(self, integration: str) -> bool:
        """Drop the cache held in memory for the stored one; True when the stored one differs."""
        if self.store is None or self.cipher is None:
            return False
        key = self.key_of(integration)
        with self._lock:
            held = self._caches.get(key)
        row = self.store.token_caches.load_token_cache(key, integration)
        if row is None or held is None:
            return False
        stored = self.cipher.decrypt(row.ciphertext).decode()
        if stored == held.serialize():
            return False
        with self._lock:
            self._caches.pop(key, None)
            self._stored.pop(key, None)
            self._forget_access(key)
        return True


def token_key(config: Config, integ: IntegrationConfig) -> str:
    """(tenant id, client id, account), lower case: whose refresh token an integration uses."""
    app = config.apps[integ.app]
    tenant = config.integration_tenant(integ)
    return f"{tenant.tenant_id}:{app.client_id}:{integ.account or ''}".lower()


def hint_of(secret: str) -> str:
    """Graph's ``hint``: the first three characters of the secret value."""
    return secret[:3]

