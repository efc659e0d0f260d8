"""Who may use the web app: an admin password (scrypt hash in the config), a trusted reverse proxy that
names the user in a header, or nobody checked at all when the config says ``web.auth: none``.

Pages send a visitor without a session to ``/login``; ``/api`` and ``/metrics`` answer 401 and also
take HTTP Basic with the admin's credentials on GET (for scripts and Prometheus). Basic is refused on
POST: a browser replays cached Basic credentials cross-site, so actions need the session and its CSRF
token.

What an outsider can send costs the monitor little (the web app shares its event loop with the scheduler):

- scrypt never runs on the event loop. Every verification goes to a small pool of worker threads
  (``VERIFY_WORKERS``) with a bounded queue (``VERIFY_QUEUE``); past it a request is answered 429 at once.
- a Basic header that verified is remembered for ``BASIC_CACHE_S`` under an HMAC of the header (keyed by a
  random per-process key), never the password; a header that failed is remembered the same way, so the same
  wrong header neither runs scrypt again nor counts as another guess.
- failures are counted per client (Basic and the login form together) and, for the form, per user name; past
  the limit the answer is 429 with Retry-After, without running scrypt (``monitor.web.throttle``).

Sessions (``Sessions``) carry an id, their sign-in time and an epoch: a MAC of the password hash under the
session key. A changed password (or session key) ends every session, a session ends ``session_max_age`` after
sign-in whatever it did since, and signing out ends the session on the server: its id is recorded as ended in
the store (shared by every instance, kept across restarts) until its lifetime is over.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextvars
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

from mailwarden.errors import ConfigError
from mailwarden.monitor.config import WebConfig, resolve_ref
from mailwarden.monitor.web.throttle import Throttle, client_key, retry_header

log = logging.getLogger("mailwarden.web.auth")

SCHEME = "scrypt"
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024

# scrypt with the default cost takes ~100-150 ms of CPU and 32 MiB: a pool of at most two threads, leaving a
# core to the event loop on a small machine, and a bounded queue in front of it.
VERIFY_WORKERS = max(1, min(2, (os.cpu_count() or 2) // 2))
VERIFY_QUEUE = 8
BASIC_CACHE_S = 300.0  # a verified Basic header is taken without scrypt this long (Prometheus scrapes each minute)
BASIC_CACHE_SIZE = 256
CLIENT_FAILURES = (10, 300.0)  # failed sign-ins (Basic or form) per client address: 10, then one per 30 s
USER_FAILURES = (30, 900.0)  # failed form sign-ins per user name, from anywhere: 30, then one per 30 s

# The client (``throttle.client_key``) of the request under way: the Gate sets it; ``Access.check`` reads it
# in the worker thread the login handler calls it from (asyncio.to_thread copies the context).
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("mailwarden_web_client", default="-")


class Throttled(HTTPException):
    """429 with Retry-After: too many failed sign-ins, or too many verifications waiting."""

    def __init__(self, retry_after: float, detail: str):
        self.retry_after = max(1, int(retry_header(retry_after)))
        super().__init__(429, detail, headers={"retry-after": str(self.retry_after)})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$N$r$p$salt$hash``: what ``web.password_hash`` holds."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """scrypt: CPU-bound for ~100 ms. In the web app it runs only in the verification pool (``Access``)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=_MAXMEM, dklen=len(_unb64(digest)))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, _unb64(digest))


# -- the verification pool ---------------------------------------------------------------------------------
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pending = 0
_pool_lock = threading.Lock()


def _done(_: concurrent.futures.Future) -> None:
    global _pending
    with _pool_lock:
        _pending -= 1


def _submit(fn: Callable[..., bool], *args: Any) -> concurrent.futures.Future:
    """Run ``fn`` in the verification pool; Throttled when ``VERIFY_QUEUE`` verifications are already waiting."""
    global _pool, _pending
    with _pool_lock:
        if _pending >= VERIFY_QUEUE:
            raise Throttled(1, "too many sign-ins under way: try again in a moment")
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(VERIFY_WORKERS, thread_name_prefix="mailwarden-auth")
        _pending += 1
    try:
        future = _pool.submit(fn, *args)
    except BaseException:
        _done(None)  # type: ignore[arg-type]
        raise
    future.add_done_callback(_done)
    return future


# -- helpers -----------------------------------------------------------------------------------------------
def load_password_hash(web: WebConfig, base_dir: Path) -> str | None:
    """The configured hash (inline, or behind env:/file:), checked for shape so a typo fails at start."""
    value = web.password_hash
    if value is None:
        return None
    if value.startswith(("env:", "file:")):
        value = resolve_ref(value, base_dir, what="web.password_hash")
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != SCHEME or not all(parts[1:4]) or not parts[1].isdigit():
        raise ConfigError("web.password_hash is not a hash made by `mailwarden web hash-password`",
                          hint="Run `mailwarden web hash-password` and paste its output")
    return value


def session_key(web: WebConfig, base_dir: Path) -> str:
    if web.session_key:
        return resolve_ref(web.session_key, base_dir, what="web.session_key")
    return secrets.token_urlsafe(32)  # sessions end when the process restarts


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no ``//host`` or ``/\\host`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or len(target) > 2048:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


def login_url(request: Request) -> str:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(safe_next(path), safe="")


class Proxies:
    """The trusted reverse proxies of ``web.trusted_proxies``: addresses, networks (CIDR) or literal names."""

    def __init__(self, entries: tuple[str, ...] | list[str]):
        self.entries = tuple(e for e in entries if e and e != "*")  # "*" would trust anyone: never
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        for entry in self.entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.literals.add(entry)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str) or not host:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return any(ip in net for net in self.networks)


PEER = "mailwarden.peer"  # the scope key holding the TCP peer (scope["client"] is the client behind a proxy)


def peer_of(request: Request) -> str:
    return request.scope.get(PEER) or (request.client.host if request.client else "")


class _Expiring(OrderedDict):
    """A small LRU of digest -> (value, expiry)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_live(self, key: bytes, now: float) -> Any:
        item = self.get(key)
        if item is None:
            return None
        if item[1] <= now:
            self.pop(key, None)
            return None
        self.move_to_end(key)
        return item

    def put(self, key: bytes, value: Any, expires: float) -> None:
        self[key] = (value, expires)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class Access:
    mode: str  # password | proxy | none
    user: str = "admin"
    password_hash: str | None = None
    proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    client_failures: Throttle = field(default_factory=lambda: Throttle(*CLIENT_FAILURES), repr=False,
                                      compare=False)
    user_failures: Throttle = field(default_factory=lambda: Throttle(*USER_FAILURES), repr=False, compare=False)

    def __post_init__(self) -> None:
        self.proxies = Proxies(self.trusted_proxies)
        self._cache_key = os.urandom(32)  # the Basic cache's keys are HMACs under it: never a password
        self._verified = _Expiring(BASIC_CACHE_SIZE)
        self._refused = _Expiring(BASIC_CACHE_SIZE)
        self._lock = threading.Lock()

    async def user_of(self, request: Request, *, basic_ok: bool, session_ok: bool = True) -> str | None:
        """The signed-in user, or None. ``session_ok=False``: the session's user is not taken (the Gate could
        not confirm it). Raises Throttled (429) for a client past its failure limit."""
        if self.mode == "none":
            return "anonymous"
        if self.mode == "proxy":
            name = request.headers.get(self.proxy_header or "") if peer_of(request) in self.proxies else None
            return name.strip() or None if name else None
        user = request.session.get("user") if session_ok else None
        if user:
            return str(user)
        header = request.headers.get("authorization", "")
        if basic_ok and header:
            return await self.basic(header, client_key(request.client.host if request.client else None))
        return None

    async def basic(self, header: str, client: str) -> str | None:
        """The user an ``Authorization: Basic`` header signs in, verified off the event loop."""
        if len(header) > 1024:
            return None
        digest = hmac.new(self._cache_key, header.encode("latin-1", "replace"), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            if (hit := self._verified.get_live(digest, now)) is not None:
                return hit[0]
            if self._refused.get_live(digest, now) is not None:
                return None  # the same wrong header again: no scrypt, not another guess
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if wait := self.client_failures.retry_after(client):
            raise Throttled(wait, "too many failed sign-ins from this address: wait, then try again")
        ok = await asyncio.wrap_future(_submit(self._verify, user, password))
        with self._lock:
            if ok:
                self._verified.put(digest, user, now + BASIC_CACHE_S)
            else:
                self._refused.put(digest, None, now + BASIC_CACHE_S)
        if ok:
            return user
        self.client_failures.hit(client)
        return None

    def check(self, user: str, password: str, client: str | None = None) -> bool:
        """The login form's check (called from a worker thread). Raises Throttled (429) while the client or the
        user name is past its failure limit, without running scrypt; counts a failure against both."""
        client = client or CLIENT.get()
        name = hashlib.sha256(user.casefold().encode("utf-8", "replace")).hexdigest()[:32]
        wait = max(self.client_failures.retry_after(client), self.user_failures.retry_after(name))
        if wait:
            raise Throttled(wait, "too many failed sign-ins: wait, then try again")
        ok = _submit(self._verify, user, password).result()
        if ok:
            self.client_failures.reset(client)
        else:
            self.client_failures.hit(client)
            self.user_failures.hit(name)
        return ok

    def _verify(self, user: str, password: str) -> bool:
        """In the verification pool: scrypt, and the user name compared in constant time."""
        if self.password_hash is None:
            return False
        ok_user = hmac.compare_digest(user.encode("utf-8", "replace"), self.user.encode())
        return verify_password(password, self.password_hash) and ok_user


def access_from(web: WebConfig, base_dir: Path) -> Access:
    mode = web.auth_mode()
    if mode is None:
        raise ConfigError("the web app needs an access rule: set web.password_hash (from `mailwarden web "
                          "hash-password`), or web.auth: proxy with web.proxy_header, or web.auth: none",
                          hint="web.auth: none only behind something else that checks who may come in")
    return Access(mode=mode, user=web.admin_user, password_hash=load_password_hash(web, base_dir),
                  proxy_header=web.proxy_header, trusted_proxies=tuple(web.trusted_proxies))


# -- sessions ----------------------------------------------------------------------------------------------
ENDED_KEY = "web_sessions_ended"  # store meta: {session id: unix time its lifetime ends}, pruned on write
ENDED_REFRESH_S = 5.0  # how old this instance's copy of the ended sessions may get (another instance's logout)


class Sessions:
    """Server-side rules for signed-in sessions (password mode): stamped at sign-in, checked on every request."""

    def __init__(self, *, secret: str, password_hash: str | None, lifetime_s: float, store: Callable[[], Any]):
        self.epoch = _b64(hmac.new(secret.encode(), b"session-epoch\0" + (password_hash or "").encode(),
                                   hashlib.sha256).digest()[:16])
        self.lifetime_s = float(lifetime_s)
        self._store = store
        self._ended: dict[str, float] = {}
        self._loaded_at: float | None = None  # monotonic; None until the store was read once
        self._loading = False

    def stamp(self, session: MutableMapping[str, Any], now: float | None = None) -> None:
        """A new sign-in: a fresh id, its time, the current epoch."""
        session["sid"] = secrets.token_urlsafe(16)
        session["iat"] = int(time.time() if now is None else now)
        session["ep"] = self.epoch

    async def check(self, session: MutableMapping[str, Any], now: float | None = None) -> str:
        """``ok``; ``ended`` (the session is over: forget it); or ``unknown`` (the store could not be read yet:
        not signed in for this request, but the cookie is kept)."""
        now = time.time() if now is None else now
        sid, iat = session.get("sid"), session.get("iat")
        if not isinstance(sid, str) or not isinstance(iat, int) or isinstance(iat, bool):
            return "ended"  # a cookie from before sessions were stamped: sign in again
        if not hmac.compare_digest(str(session.get("ep", "")), self.epoch):
            return "ended"  # the password (or the session key) changed
        if not 0 <= now - iat < self.lifetime_s:
            return "ended"
        await self._refresh()
        if self._loaded_at is None:
            return "unknown"
        return "ended" if sid in self._ended else "ok"

    async def end(self, sid: str, iat: int) -> None:
        """Sign-out: the session id is ended here at once, and in the store for every instance."""
        until = float(iat) + self.lifetime_s
        self._ended[sid] = until
        try:
            await asyncio.to_thread(self._persist, sid, until)
        except Exception:  # noqa: BLE001 - the store is down: this instance still refuses the session
            log.warning("sign-out not recorded in the store: other instances accept the session until its "
                        "lifetime ends", exc_info=True)

    def _store_or_none(self) -> Any:
        store = self._store()
        return store if hasattr(getattr(store, "meta", None), "get_meta") else None

    def _read(self, store: Any) -> dict[str, float]:
        raw = store.meta.get_meta(ENDED_KEY)
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        return {str(k): float(v) for k, v in doc.items() if isinstance(v, int | float)} \
            if isinstance(doc, dict) else {}

    def _persist(self, sid: str, until: float) -> None:
        store = self._store_or_none()
        if store is None:
            return
        for _ in range(5):  # read, merge, write, read back: two instances signing out at once both stay recorded
            now = time.time()
            ended = {k: v for k, v in self._read(store).items() if v > now}
            ended[sid] = until
            store.meta.set_meta(ENDED_KEY, json.dumps(ended, separators=(",", ":")))
            if sid in self._read(store):
                return
        log.warning("sign-out could not be confirmed in the store")

    async def _refresh(self) -> None:
        mono = time.monotonic()
        if self._loaded_at is not None and (self._loading or mono - self._loaded_at < ENDED_REFRESH_S):
            return
        self._loading = True
        try:
            store = self._store_or_none()
            stored = await asyncio.to_thread(self._read, store) if store is not None else {}
        except Exception:  # noqa: BLE001 - keep the last copy (retried later); with none, check() says unknown
            log.warning("ended sessions unreadable from the store", exc_info=True)
            if self._loaded_at is not None:
                self._loaded_at = mono
            return
        finally:
            self._loading = False
        now = time.time()
        self._ended = {k: v for k, v in {**self._ended, **stored}.items() if v > now}
        self._loaded_at = mono
