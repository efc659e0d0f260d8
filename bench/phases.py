"""Kind-homogeneous phases (CPU per check by kind), tokens served from cache, and the cron-like baseline."""

from __future__ import annotations

import time
from typing import Any

import requests

import mailwarden.monitor.tokens as tokens_mod
from bench.cycle import Measured, Meter
from mailwarden.checks.base import CheckContext
from mailwarden.checks.mailbox import fetch_token
from mailwarden.monitor.credentials import CredentialReader
from mailwarden.monitor.runner import Runner
from mailwarden.monitor.runtime import Runtime
from mailwarden.monitor.tokens import TokenProvider


async def by_kind(runtime: Runtime, meter: Meter, kinds: list[str], limit: int,
                  rounds: int = 1) -> dict[str, list[Measured]]:
    """Each kind alone, through the runner (its concurrency limits and the store), on up to ``limit`` checks, in
    ``rounds`` rounds of every kind in turn: a VM whose speed drifts during the phase moves each kind's rounds alike,
    and ``median_cpu_ms`` of a kind's rounds is not one moment's speed."""
    out: dict[str, list[Measured]] = {}
    for _ in range(rounds):
        for kind in kinds:
            selection = [(i.name, [kind]) for i in runtime.config.integrations if kind in i.checks][:limit]
            if not selection:
                continue
            if kind == "secret_expiry":
                runtime.credentials._cache.clear()  # one Graph read per app, as in a cycle
            started = meter.begin()
            results = await runtime.runner.run_many(selection)
            out.setdefault(kind, []).append(meter.end(started, results))
    return out


def context(runtime: Runtime, name: str, kind: str) -> CheckContext:
    cfg = runtime.config
    integ = cfg.integration(name)
    app = cfg.apps[integ.app]
    return CheckContext(config=cfg, integration=integ, app=app, tenant=cfg.tenants[app.tenant],
                        options=integ.options(kind), tokens=runtime.tokens,
                        credentials=runtime.credentials, endpoints=runtime.tokens.endpoints,
                        timeout_s=30.0)


def cached_tokens(runtime: Runtime, meter: Meter, limit: int) -> dict[str, Any]:
    """The token a mailbox check presents, served from cache: CPU per fetch, by flow (no round trip expected)."""
    out: dict[str, Any] = {}
    for flow in ("app", "delegated"):
        pairs = []
        for integ in runtime.config.integrations:
            kind = next((k for k in integ.checks if k not in ("token", "secret_expiry")), None)
            if integ.flow == flow and kind:
                pairs.append((context(runtime, integ.name, kind), kind))
        pairs = pairs[:limit]
        if not pairs:
            continue
        for ctx, kind in pairs:  # warm: the token is in the cache before the measured pass
            fetch_token(ctx, kind)
        started = meter.begin()
        failures = sum(not isinstance(fetch_token(ctx, kind), str) for ctx, kind in pairs)
        m = meter.end(started, [])
        out[flow] = {"fetches": len(pairs), "cpu_ms_per_fetch": round(m.cpu_s * 1000 / len(pairs), 3),
                     "wall_ms_per_fetch": round(m.wall_s * 1000 / len(pairs), 3), "failures": failures,
                     "token_requests": m.sandbox_token_total, "discovery_gets": sum(m.idp_discovery.values())}
    return out


class FreshTokens(TokenProvider):
    """A cron script's tokens: a new one from the token endpoint for every check. A cron script starts a new
    process per mailbox, so each token comes from a new MSAL app object with a new HTTP session, and MSAL's
    discovery cache (``http_cache``) lives in the app object: the authority's discovery document is fetched
    again every time, on a new connection. (Until session 3 the baseline shared mailwarden's discovery cache
    and connection pool, which no cron script has.)"""

    def _http(self) -> requests.Session:
        return tokens_mod.http_session(self.endpoints)  # looked up now: bench.instrument counts its requests

    def app_token(self, app_name: str, resource: str, *, fresh: bool = False, **kw: Any) -> dict[str, Any]:
        return super().app_token(app_name, resource, fresh=True, **kw)  # kw: tenant_name (multitenant apps)

    def delegated_token(self, integ, scopes, *, force_refresh: bool = False, **kw: Any) -> dict[str, Any]:
        return super().delegated_token(integ, scopes, force_refresh=True, **kw)


async def baseline(runtime: Runtime, meter: Meter, count: int) -> tuple[Measured, int]:
    """The same kinds of check, one after another, a fresh token each time, on the first ``count`` integrations
    (whole tenants: the same mix as the cycle). Returns the measurement and how many integrations ran."""
    cfg = runtime.config
    tokens = FreshTokens(cfg, runtime.store, runtime.cipher, timeout_s=cfg.defaults.timeout)
    credentials = CredentialReader(cfg, tokens, runtime.store, ttl_s=0.0, timeout_s=cfg.defaults.timeout)
    runner = Runner(cfg, runtime.store, tokens, credentials)
    chosen = cfg.integrations[:count]
    started = meter.begin()
    results = []
    t0 = time.perf_counter()
    for integ in chosen:
        for kind in integ.checks:
            results.append(await runner.run_one(integ.name, kind))
    m = meter.end(started, results, wall_end=time.perf_counter())
    m.wall_s = time.perf_counter() - t0
    return m, len(chosen)
