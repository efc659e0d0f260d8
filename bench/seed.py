"""Delegated refresh tokens seeded through the sandbox, as an admin would: one browser sign-in (auth code +
PKCE through `monitor.reauth`) per (app, account); integrations sharing that app and account (HotH's
delegate on several shared mailboxes) get their own copy of the signed-in token cache."""

from __future__ import annotations

import msal

from mailwarden.monitor import reauth
from mailwarden.monitor.runtime import Runtime
from mailwarden_sandbox.browser import sign_in


def seed_delegated(runtime: Runtime, passwords: dict[str, str], ca_path: str) -> dict[str, int]:
    cfg = runtime.config
    tokens = runtime.tokens
    redirect = cfg.web.base_url.rstrip("/") + "/auth/callback"
    signed: dict[tuple[str, str], str] = {}  # (app, account) -> serialized cache
    sign_ins = copies = 0
    for integ in cfg.integrations:
        if integ.flow != "delegated" or not integ.account:
            continue
        key = (integ.app, integ.account.lower())
        if key in signed:
            cache = msal.SerializableTokenCache()
            cache.deserialize(signed[key])
            tokens.save_cache(integ, cache)
            copies += 1
            continue
        flow = reauth.start(tokens, integ, redirect)
        back = sign_in(flow["auth_uri"], integ.account, passwords[integ.account], ca_path)
        reauth.complete(tokens, integ, flow, reauth.parse_redirect(back))
        cache = tokens.load_cache(integ.name)
        assert cache is not None
        signed[key] = cache.serialize()
        sign_ins += 1
    return {"sign_ins": sign_ins, "copies": copies}
