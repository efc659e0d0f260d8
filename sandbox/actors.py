"""Consuming systems: one actor per integration, signing in and collecting mail the way the real system does.

An actor holds its own copy of the app's secret (and, delegated, its own refresh token), and every round it
asks the sandbox's token endpoint over HTTPS (with its own client-request-id, so its sign-ins land in the logs
under its correlation ids) and then collects mail with a real client: POP (RETR + DELE), IMAP (FETCH BODY[]
marks \\Seen; `imap_action: delete` also deletes and expunges), Graph (unread messages, then PATCH isRead) or
EWS (GetFolder; nothing to mark). Rounds run on the actor's schedule in a background thread of the sandbox, or
one at a time through the `tick_actors` op (tests never sleep).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import imaplib
import poplib
import secrets
import socket
import ssl
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter

from .state import RefreshToken, State, Tenant

PROTOCOLS = ("pop", "imap", "graph", "ews")
FLOWS = ("app", "delegated")
ACTOR_FIELDS = {"name", "app_id", "flow", "protocol", "mailbox", "account", "secret", "secret_key_id", "interval_s",
                "scopes", "signed_in_at", "running", "imap_action", "source_address"}
EXO_APP = ["https://outlook.office365.com/.default"]
SCOPES = {
    ("app", "graph"): ["https://graph.microsoft.com/.default"],
    ("app", "pop"): EXO_APP, ("app", "imap"): EXO_APP, ("app", "ews"): EXO_APP,
    ("delegated", "pop"): ["https://outlook.office.com/POP.AccessAsUser.All", "offline_access"],
    ("delegated", "imap"): ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"],
    ("delegated", "ews"): ["https://outlook.office.com/EWS.AccessAsUser.All", "offline_access"],
    ("delegated", "graph"): ["https://graph.microsoft.com/Mail.ReadWrite", "offline_access"],
}
DEFAULT_INTERVAL_S = 300.0


@dataclass
class Actor:
    name: str
    tenant_id: str
    app_id: str
    flow: str
    protocol: str
    mailbox: str
    account: str | None = None
    secret: str | None = None  # its own copy; None: a public client (refresh without a secret)
    scopes: list[str] = field(default_factory=list)
    interval_s: float | None = DEFAULT_INTERVAL_S  # None: only `tick_actors` runs it
    running: bool = True
    refresh_token: str | None = None
    imap_action: str = "seen"
    source_address: str | None = None  # a loopback address of its own (e.g. 127.0.0.2): its sign-ins' ipAddress
    next_run: dt.datetime | None = None
    last: dict | None = None
    rounds: int = 0
    failures: int = 0
    collected: int = 0
    correlation_ids: deque = field(default_factory=lambda: deque(maxlen=50))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def status(self) -> dict:
        return {"name": self.name, "tenant": self.tenant_id, "app_id": self.app_id, "flow": self.flow,
                "protocol": self.protocol, "mailbox": self.mailbox, "account": self.account,
                "running": self.running, "interval_s": self.interval_s,
                "next_run": self.next_run.isoformat() if self.next_run else None,
                "secret_hint": self.secret[:3] if self.secret else None,
                "has_refresh_token": self.refresh_token is not None, "imap_action": self.imap_action,
                "source_address": self.source_address, "last": self.last, "rounds": self.rounds,
                "failures": self.failures, "collected": self.collected,
                "correlation_ids": list(self.correlation_ids)}


def newest_secret(state: State, tenant: Tenant, app_id: str) -> str | None:
    """The secret an admin would paste today: the newest one that is valid now."""
    app = tenant.apps[app_id.lower()]
    now = state.now()
    good = [s for s in app.secrets if s.start <= now < s.end]
    return max(good, key=lambda s: s.start).value if good else None


def issue_refresh_token(state: State, actor: Actor, signed_in_at: dt.datetime | None = None) -> str:
    """The refresh token the consuming system got when someone signed it in (an interactive sign-in then)."""
    tenant = state.tenants[actor.tenant_id]
    user = tenant.users[actor.account.lower()]
    when = signed_in_at or state.now()
    rt = RefreshToken(token="1.Asandbox" + secrets.token_urlsafe(48), tenant_id=tenant.id, client_id=actor.app_id,
                      upn=user.upn.lower(), scopes=list(actor.scopes), auth_time=when, issued_at=when,
                      mfa=user.mfa == "required", public=actor.secret is None)
    state.refresh_tokens[rt.token] = rt
    actor.refresh_token = rt.token
    return rt.token


def add_actor(state: State, tenant_id: str, spec: dict) -> Actor:
    from . import scenario

    unknown = set(spec) - ACTOR_FIELDS
    if unknown:
        raise scenario.ScenarioError(f"unknown actor fields: {sorted(unknown)}")
    tenant = state.require_tenant(tenant_id)
    flow, protocol = spec.get("flow", "app"), spec.get("protocol", "graph")
    if flow not in FLOWS or protocol not in PROTOCOLS:
        raise ValueError(f"flow must be one of {FLOWS} and protocol one of {PROTOCOLS}")
    with state.lock:
        name = str(spec["name"])
        if name in state.actors:
            raise ValueError(f"actor {name} exists")
        app = tenant.apps.get(str(spec["app_id"]).lower())
        if app is None:
            raise KeyError(f"no app {spec['app_id']} in tenant {tenant.id}")
        secret = spec.get("secret")
        if spec.get("secret_key_id"):
            secret = next(s.value for s in app.secrets if s.key_id == spec["secret_key_id"])
        elif "secret" not in spec:
            secret = newest_secret(state, tenant, app.app_id)
        interval = spec.get("interval_s", DEFAULT_INTERVAL_S)
        actor = Actor(name=name, tenant_id=tenant.id, app_id=app.app_id, flow=flow, protocol=protocol,
                      mailbox=str(spec["mailbox"]), account=spec.get("account"), secret=secret,
                      scopes=list(spec.get("scopes") or SCOPES[(flow, protocol)]),
                      interval_s=None if interval is None else scenario.parse_duration(interval),
                      running=bool(spec.get("running", True)), imap_action=spec.get("imap_action", "seen"),
                      source_address=spec.get("source_address"))
        if actor.imap_action not in ("seen", "delete"):
            raise ValueError("imap_action must be seen or delete")
        if flow == "delegated":
            if not actor.account or actor.account.lower() not in tenant.users:
                raise KeyError(f"delegated actor {name}: no user {actor.account} in tenant {tenant.id}")
            signed_in = spec.get("signed_in_at", "+0s")
            if signed_in is not None:  # null: nobody has signed it in yet
                issue_refresh_token(state, actor, scenario.parse_when(signed_in, state.now()))
        if actor.interval_s is not None:
            actor.next_run = state.now() + dt.timedelta(seconds=actor.interval_s)
        state.actors[name] = actor
    return actor


class ActorFailure(Exception):
    def __init__(self, step: str, detail: str, code: int | None = None):
        super().__init__(detail)
        self.step, self.detail, self.code = step, detail, code


class _Bound(HTTPAdapter):
    """Connects from a given local address, as a consuming system on another host would."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


class _POP3(poplib.POP3_SSL):
    """POP3 over TLS from a given local address (None: any)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, source: tuple | None):
        self._source = source
        super().__init__(host, port, context=context, timeout=15)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=self._source)
        return self.context.wrap_socket(sock, server_hostname=self.host)


class _IMAP4(imaplib.IMAP4_SSL):
    """IMAP4 over TLS from a given local address (None: any)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, source: tuple | None):
        self._source = source
        super().__init__(host, port, ssl_context=context, timeout=15)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=self._source)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def _xoauth2(address: str, token: str) -> str:
    return base64.b64encode(f"user={address}\x01auth=Bearer {token}\x01\x01".encode()).decode()


class ActorRunner:
    """Runs the actors' rounds: on their schedules in a background thread, or now through `tick`."""

    def __init__(self, state: State, base_url: str, ca_path, endpoints: dict):
        self.state, self.base_url, self.ca_path, self.endpoints = state, base_url, str(ca_path), endpoints
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-actors", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            now = self.state.now()
            with self.state.lock:
                due = [a for a in self.state.actors.values()
                       if a.running and a.interval_s is not None and a.next_run is not None and a.next_run <= now]
            for actor in due:
                if actor.lock.acquire(blocking=False):  # a tick may be running it now
                    try:
                        self._round(actor)
                    finally:
                        actor.lock.release()

    def tick(self, name: str | None = None) -> list[dict]:
        """One round of the named actor, or of every running actor, now (whatever their schedules say)."""
        with self.state.lock:
            if name is not None:
                if name not in self.state.actors:
                    raise KeyError(f"no actor {name}")
                actors = [self.state.actors[name]]
            else:
                actors = [a for a in self.state.actors.values() if a.running]
        out = []
        for actor in actors:
            with actor.lock:
                out.append({"name": actor.name, **self._round(actor)})
        return out

    # -- one round ---------------------------------------------------------------------------------------
    def _round(self, actor: Actor) -> dict:
        result: dict = {"at": self.state.now().isoformat(), "ok": False, "step": "token", "error_code": None,
                        "error": None, "collected": 0, "correlation_id": None}
        session = requests.Session()
        session.verify, session.trust_env = self.ca_path, False
        if actor.source_address:
            session.mount("https://", _Bound(actor.source_address))
        try:
            token = self._token(actor, session, result)
            result["step"] = actor.protocol
            result["collected"] = getattr(self, "_" + actor.protocol)(actor, token, session)
            result["ok"] = True
        except ActorFailure as f:
            result.update(step=f.step, error=f.detail, error_code=f.code)
        except (OSError, ssl.SSLError, imaplib.IMAP4.error, poplib.error_proto, requests.RequestException) as exc:
            result.update(error=f"{type(exc).__name__}: {exc}")
        finally:
            session.close()
        with self.state.lock:
            actor.rounds += 1
            actor.failures += 0 if result["ok"] else 1
            actor.collected += result["collected"]
            actor.last = result
            if actor.interval_s is not None:
                actor.next_run = self.state.now() + dt.timedelta(seconds=actor.interval_s)
        return result

    def _token(self, actor: Actor, session: requests.Session, result: dict) -> str:
        form = {"client_id": actor.app_id, "scope": " ".join(actor.scopes)}
        if actor.flow == "app":
            form["grant_type"] = "client_credentials"
        else:
            if actor.refresh_token is None:
                raise ActorFailure("token", "not signed in: no refresh token")
            form.update(grant_type="refresh_token", refresh_token=actor.refresh_token)
        if actor.secret is not None:
            form["client_secret"] = actor.secret
        corr = str(uuid.uuid4())
        result["correlation_id"] = corr
        with self.state.lock:
            actor.correlation_ids.append(corr)
        r = session.post(f"{self.base_url}/{actor.tenant_id}/oauth2/v2.0/token", data=form, timeout=15,
                         headers={"client-request-id": corr, "return-client-request-id": "true",
                                  "User-Agent": f"{actor.name} (consuming system)"})
        try:
            body = r.json()
        except ValueError as exc:  # 429 plain text, 5xx HTML or empty during an incident
            raise ActorFailure("token", f"HTTP {r.status_code} {r.text[:80]!r}") from exc
        if "access_token" not in body:
            codes = body.get("error_codes") or [None]
            raise ActorFailure("token", (body.get("error_description") or "").split("\r\n")[0], codes[0])
        if body.get("refresh_token"):
            actor.refresh_token = body["refresh_token"]  # refresh tokens rotate: keep the newest
        return body["access_token"]

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_path)

    def _hostport(self, name: str) -> tuple[str, int]:
        host, port = self.endpoints[name].rsplit(":", 1)
        return host, int(port)

    def _pop(self, actor: Actor, token: str, session) -> int:
        host, port = self._hostport("pop")
        p = _POP3(host, port, self._ssl(), (actor.source_address, 0) if actor.source_address else None)
        try:
            if p._shortcmd("AUTH XOAUTH2") != b"+ ":
                raise ActorFailure("pop", "AUTH XOAUTH2 refused")
            try:
                p._shortcmd(_xoauth2(actor.mailbox, token))
            except poplib.error_proto as exc:
                raise ActorFailure("pop", exc.args[0].decode(errors="replace")) from exc
            count = int(p.stat()[0])
            for n in range(1, count + 1):
                p.retr(n)
                p.dele(n)
            p.quit()
            return count
        finally:
            with contextlib.suppress(OSError):
                p.close()

    def _imap(self, actor: Actor, token: str, session) -> int:
        host, port = self._hostport("imap")
        im = _IMAP4(host, port, self._ssl(), (actor.source_address, 0) if actor.source_address else None)
        try:
            try:
                im.authenticate("XOAUTH2", lambda _: base64.b64decode(_xoauth2(actor.mailbox, token)))
            except imaplib.IMAP4.error as exc:
                raise ActorFailure("imap", str(exc)) from exc
            typ, data = im.select("INBOX")
            if typ != "OK":
                raise ActorFailure("imap", (data[0] or b"").decode(errors="replace"))
            typ, [hits] = im.search(None, "UNSEEN")
            numbers = hits.split()
            for n in numbers:
                im.fetch(n.decode(), "(BODY[])")  # read in SELECT mode: \Seen is set, as a client reading it
            if actor.imap_action == "delete" and numbers:
                im.store(b",".join(numbers).decode(), "+FLAGS", "\\Deleted")
                im.expunge()
            im.logout()
            return len(numbers)
        except imaplib.IMAP4.abort as exc:
            raise ActorFailure("imap", str(exc)) from exc
        finally:
            if im.state != "LOGOUT":  # logout closed it already
                with contextlib.suppress(OSError):
                    im.shutdown()

    def _graph(self, actor: Actor, token: str, session: requests.Session) -> int:
        base = f"{self.base_url}/v1.0/users/{actor.mailbox}"
        headers = {"Authorization": f"Bearer {token}", "client-request-id": str(uuid.uuid4())}
        r = session.get(f"{base}/mailFolders/inbox/messages", headers=headers, timeout=15,
                        params={"$filter": "isRead eq false", "$top": "50", "$select": "id,subject"})
        if r.status_code != 200:
            raise ActorFailure("graph", f"HTTP {r.status_code} {_graph_code(r)}")
        ids = [m["id"] for m in r.json().get("value", [])]
        for mid in ids:
            r = session.patch(f"{base}/messages/{mid}", json={"isRead": True}, headers=headers, timeout=15)
            if r.status_code != 200:
                raise ActorFailure("graph", f"HTTP {r.status_code} {_graph_code(r)}")
        return len(ids)

    def _ews(self, actor: Actor, token: str, session: requests.Session) -> int:
        impersonation = ("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
                         f"{actor.mailbox}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
                         if actor.flow == "app" else "")
        body = ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
                'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" '
                'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
                f'<soap:Header><t:RequestServerVersion Version="Exchange2016"/>{impersonation}</soap:Header>'
                "<soap:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
                '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder></soap:Body>'
                "</soap:Envelope>")
        r = session.post(f"{self.base_url}/EWS/Exchange.asmx", data=body.encode(), timeout=15,
                         headers={"Authorization": f"Bearer {token}", "X-AnchorMailbox": actor.mailbox,
                                  "Content-Type": "text/xml; charset=utf-8"})
        if r.status_code != 200 or 'ResponseClass="Success"' not in r.text:
            raise ActorFailure("ews", f"HTTP {r.status_code} {r.headers.get('x-ms-diagnostics', '')}".strip())
        return 0


def _graph_code(r: requests.Response) -> str:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
