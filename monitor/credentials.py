"""Reading an app registration's credentials (secrets and certificates) from Microsoft Graph.

Each app is read once per cycle however many integrations share it: concurrent readers of one app
wait for the same request, and a read is reused for ``ttl_s``. Reads go through the tenant's
monitor app (Application.Read.All). What is read is stored as Credential metadata (never a value).

A read that fails says why with a diagnosis code: ``graph_unreadable`` only when the monitor app lacks access
(no monitor app, its token refused, Graph's 403); ``throttled`` for a 429 (from Graph or from the token
endpoint), ``service_unavailable`` for a 5xx, ``idp_unreachable`` / a network code when a host cannot be reached.
A wait Microsoft asks for is kept with the monitor app's back-off target.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from mailwarden.checks import graph_client
from mailwarden.checks.base import Outcome, Status, token_target
from mailwarden.checks.credentials import AppCredential, CredentialRead, match, thumbprint_of  # noqa: F401
from mailwarden.checks.diagnoses import classify_aadsts
from mailwarden.checks.network import network_code
from mailwarden.errors import SecretReferenceError
from mailwarden.monitor.config import Config
from mailwarden.monitor.tokens import retry_after
from mailwarden.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.tokens import TokenProvider


THROTTLE_DEFAULT_S = 60.0  # a Graph 429 without Retry-After


_SELECT = "id,displayName,passwordCredentials,keyCredentials"


def _when(value: str | None) -> datetime | None:
    """A Graph DateTimeOffset (up to 7 fractional digits, ``Z``) as an aware datetime."""
    if not value:
        return None
    head, dot, frac = value.rstrip("Z").partition(".")
    tz = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, rest = frac.partition(sign)
            tz = sign + rest
    return _aware(datetime.fromisoformat(head + (dot + frac[:6] if dot else "") + (tz or "+00:00")))


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class CredentialReader:
    def __init__(self, config: Config, tokens: TokenProvider, store: Store | None, *, ttl_s: float = 60.0,
                 timeout_s: float = 30.0):
        self.config = config
        self.tokens = tokens
        self.store = store
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, CredentialRead]] = {}
        self._inflight: dict[str, asyncio.Task[CredentialRead]] = {}

    async def read(self, app_name: str) -> CredentialRead:
        hit = self._cache.get(app_name)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        task = self._inflight.get(app_name)
        if task is None:
            task = asyncio.ensure_future(self._read(app_name))
            self._inflight[app_name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(app_name, None))
        result = await asyncio.shield(task)
        self._cache[app_name] = (time.monotonic(), result)
        return result

    async def _read(self, app_name: str) -> CredentialRead:
        app = self.config.apps[app_name]
        tenant = self.config.tenants[app.tenant]
        if not tenant.monitor_app:
            return CredentialRead(app_name, False, code="graph_unreadable",
                                  reason=f"tenant {app.tenant} names no monitor_app to read Graph with")
        endpoints = self.tokens.endpoints
        monitor = self.config.apps.get(tenant.monitor_app)
        target = token_target(tenant.tenant_id, monitor.client_id) if monitor else None
        # One GET and json.loads, not msgraph-sdk: kiota's generated models re-run about 1,200 imports for
        # every entity they parse (~5 ms of CPU per application read, measured by bench/), for 4 fields.
        try:
            result = await asyncio.to_thread(self._monitor_token, tenant.monitor_app, tenant.tenant_id, target)
        except SecretReferenceError as exc:
            return CredentialRead(app_name, False, code="config_error", reason=exc.message())
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
            return self._failure(app_name, tenant.monitor_app, exc)
        if isinstance(result, CredentialRead):
            result.app = app_name
            return result
        url = f"{endpoints.graph}/applications(appId='{app.client_id}')"
        try:
            async with graph_client.capped_client(verify=graph_client.verify_for(endpoints), timeout=self.timeout_s,
                                                  trust_env=not endpoints.ca_bundle) as http:
                resp = await http.get(url, params={"$select": _SELECT},
                                      headers={"Authorization": f"Bearer {result['access_token']}"})
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
            return self._failure(app_name, tenant.monitor_app, exc)
        if resp.status_code != 200:
            return self._refused(app_name, tenant.monitor_app, resp)
        body = resp.json()
        creds = [self._secret(c) for c in body.get("passwordCredentials") or []]
        creds += [self._cert(c) for c in body.get("keyCredentials") or []]
        read = CredentialRead(app_name, True, creds, display_name=body.get("displayName"))
        if self.store is not None:
            await asyncio.to_thread(self._persist, app_name, read)
        return read

    def _monitor_token(self, monitor_app: str, tenant_id: str, target: str | None) -> dict[str, Any] | CredentialRead:
        """The monitor app's Graph token, or why there is none (in the worker thread that asked, where the token
        endpoint's raw reply is known: MSAL raises on a 5xx and on a body that is not JSON)."""
        from mailwarden.checks.token import refused_outcome, token_failure
        from mailwarden.monitor.tokens import REPLIES

        endpoints = self.tokens.endpoints
        what = f"the monitor app {monitor_app}'s Graph token"
        REPLIES.begin()
        try:
            result = self.tokens.app_token(monitor_app, endpoints.graph_resource)
        except SecretReferenceError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified as the token check does
            monitor = self.config.apps.get(monitor_app)
            outcome = token_failure(exc, what, endpoints.authority, target, endpoints.token_endpoint(tenant_id),
                                    monitor.client_id if monitor else None)
            if outcome is None:  # MSAL's bare ValueError (discovery failed), or something unknown
                return CredentialRead("", False, code="graph_unreadable", reason=f"{what}: {type(exc).__name__}: "
                                                                                  f"{redact(exc)}")
            return self._from_outcome(outcome)
        if "access_token" in result:
            return result
        outcome = refused_outcome(result, what, target)
        if outcome.status != Status.FAIL:  # throttled or a transient error: nothing is known about the access
            return self._from_outcome(outcome)
        codes = result.get("error_codes") or []
        return CredentialRead("", False, code="graph_unreadable",
                              reason=f"the monitor app {monitor_app} got no Graph token "
                                     f"(AADSTS{codes[0] if codes else '?'}: {classify_aadsts(codes)})")

    @staticmethod
    def _from_outcome(outcome: Outcome) -> CredentialRead:
        return CredentialRead("", False, code=outcome.code, reason=outcome.summary,
                              retry_after_s=outcome.retry_after_s,
                              backoff_target=outcome.backoff_target if outcome.retry_after_s else None)

    def _refused(self, app_name: str, monitor_app: str, resp: httpx.Response) -> CredentialRead:
        gcode, message = graph_client.error_body(resp)
        status = resp.status_code
        wait = retry_after(resp.headers.get("retry-after"))
        app = self.config.apps[app_name]
        monitor = self.config.apps.get(monitor_app)
        target = token_target(self.config.tenants[app.tenant].tenant_id, monitor.client_id) if monitor else None
        text = redact(message).strip().rstrip(".")
        said = f"{status} {gcode or ''}".strip() + (f": {text}" if text else "")
        if status == 429:
            wait = wait or THROTTLE_DEFAULT_S
            return CredentialRead(app_name, False, code="throttled",
                                  reason=f"Graph answered {said} to the monitor app {monitor_app}; reading again "
                                         f"after {wait:g} s", retry_after_s=wait, backoff_target=target)
        if status >= 500:
            return CredentialRead(app_name, False, code="service_unavailable",
                                  reason=f"Graph answered {said}: a temporary error on Microsoft's side"
                                         + (f"; reading again after {wait:g} s" if wait else ""),
                                  retry_after_s=wait, backoff_target=target if wait else None)
        if status == 404:
            return CredentialRead(app_name, False, code="app_not_found",
                                  reason=f"Graph has no application with appId {app.client_id} in this tenant")
        return CredentialRead(app_name, False, code="graph_unreadable",
                              reason=f"Graph answered {said} (monitor app {monitor_app} needs Application.Read.All)")

    def _failure(self, app_name: str, monitor_app: str, exc: BaseException) -> CredentialRead:
        big = graph_client.too_large(exc)
        if big is not None:  # a reply past graph_client.MAX_REPLY_BYTES: not read on
            return CredentialRead(app_name, False, code="graph_unreadable", reason=f"reply_too_large: {big}")
        code = network_code(exc, default="connection_refused")
        if code is not None:  # Graph could not be reached: nothing is known about the monitor app's access
            return CredentialRead(app_name, False, code=code,
                                  reason=f"{self.tokens.endpoints.graph} could not be reached ({code}): {redact(exc)}")
        return CredentialRead(app_name, False, code="graph_unreadable", reason=f"unclassified: {redact(exc)}")

    @staticmethod
    def _secret(c: dict[str, Any]) -> AppCredential:
        return AppCredential("client_secret", str(c.get("keyId")), c.get("displayName"), c.get("hint"), None,
                             _when(c.get("startDateTime")), _when(c.get("endDateTime")))

    @staticmethod
    def _cert(c: dict[str, Any]) -> AppCredential:
        return AppCredential("certificate", str(c.get("keyId")), c.get("displayName"), None,
                             thumbprint_of(c.get("customKeyIdentifier")),
                             _when(c.get("startDateTime")), _when(c.get("endDateTime")))

    def _persist(self, app_name: str, read: CredentialRead) -> None:
        app = self.config.apps[app_name]
        ref = app.secret or (app.certificate.cert if app.certificate else None)
        try:  # an observe_only app: mailwarden holds no copy to match
            in_use = [] if app.observe_only else match(read.credentials, self.tokens.client_credential(app_name))
        except SecretReferenceError:
            in_use = []
        rows = [
            {"kind": c.kind, "key_id": c.key_id, "display_name": c.display_name, "hint": c.hint,
             "thumbprint": c.thumbprint, "start_at": c.start_at, "expires_at": c.end_at,
             "reference": ref if c in in_use else None}
            for c in read.credentials
        ]
        assert self.store is not None  # its caller runs it only with a store
        self.store.inventory.upsert_credentials(tenant=app.tenant, app=app_name, client_id=app.client_id,
                                                creds=rows, now=datetime.now(UTC), source="graph")
