"""The reauthorisation pages' rate limits: per real client behind the recommended reverse proxy, the link pages
and the OAuth callback each with their own limit, in a bounded table that new addresses cannot clear."""

from __future__ import annotations

from mailwarden.monitor.web.reauth import LIMIT, Limiter

PROXY = ("127.0.0.1", 50000)  # nginx on the same host: the default web.trusted_proxies


def junk(client, n: int, forwarded: str | None = None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return [client.get("/reauth/garbage", headers=headers).status_code for _ in range(n)]


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(world):
    """Attacks the reauthorisation page through the reverse proxy: the limit counted per TCP peer, so behind the
    proxy 30 junk requests from anyone locked everyone out of /reauth for 5 minutes. The client is now the
    address the trusted proxy names in X-Forwarded-For (the right-most one it did not add itself); from any other
    peer the header is ignored."""
    app = world.app(world.access(trusted_proxies=("127.0.0.1", "::1")))
    with world.client(app, client=PROXY) as c:
        assert junk(c, LIMIT, "203.0.113.66") == [404] * LIMIT
        assert junk(c, 1, "203.0.113.66") == [429]
        assert junk(c, 1, "10.9.9.9, 203.0.113.66") == [429]  # a forged left-most entry changes nothing
        assert junk(c, 3, "203.0.113.7") == [404] * 3  # somebody else behind the same proxy
        r = c.get("/reauth/garbage", headers={"X-Forwarded-For": "203.0.113.66"})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 300
    # from any other peer the header is ignored: a client cannot name a new address in every request
    with world.client(app, client=("198.51.100.20", 40000)) as c:
        codes = [c.get("/reauth/garbage", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(LIMIT + 1)]
    assert codes == [404] * LIMIT + [429]


def test_junk_links_do_not_lock_the_callback(world):
    """Attacks the sign-in's return: the callback shared the link pages' budget, so junk links blocked the
    OAuth callback of a sign-in under way. Each has its own limit."""
    from mailwarden.monitor.web import reauth

    callback_limit = getattr(reauth, "CALLBACK_LIMIT", 10)
    with world.client(client=("198.51.100.21", 40000)) as c:
        assert junk(c, LIMIT + 1)[-1] == 429
        assert c.get("/auth/callback?state=x").status_code == 400  # refused as unknown, not rate-limited
        codes = [c.get("/auth/callback?state=x").status_code for _ in range(callback_limit)]
        assert codes == [400] * (callback_limit - 1) + [429]


def test_a_flood_of_new_addresses_cannot_clear_a_held_back_client():
    """Attacks the limiter's memory bound: past 10,000 addresses the whole table was cleared, so 10,000 source
    addresses gave a blocked client a fresh allowance. The table stays bounded and drops the keys nearest to
    forgetting first: new one-off keys, never one being held back."""
    lim = Limiter(limit=30, window_s=300)
    for i in range(30):
        assert lim.allow("203.0.113.66", now=float(i) / 100)
    assert not lim.allow("203.0.113.66", now=1.0)
    for i in range(25_000):  # one request each from 25,000 addresses, within a second
        lim.allow(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=1.0 + i / 100_000)
    assert len(lim.hits if hasattr(lim, "hits") else lim) <= 10_001
    assert not lim.allow("203.0.113.66", now=1.5)
    assert lim.allow("203.0.113.66", now=301.0)  # the window has passed: allowed again


def test_an_ipv6_client_counts_by_its_64(world):
    """Attacks the per-address limit with IPv6, where one host is given a /64 (2**64 addresses to step through):
    every address of a /64 counts as one client; the next /64 is another."""
    app = world.app()
    codes = []
    for i in range(LIMIT + 1):
        with world.client(app, client=(f"2001:db8:1:2::{i + 1:x}", 40000)) as c:
            codes.append(c.get("/reauth/garbage").status_code)
    assert codes == [404] * LIMIT + [429]
    with world.client(app, client=("2001:db8:1:3::1", 40000)) as c:
        assert c.get("/reauth/garbage").status_code == 404
    with world.client(app, client=("::ffff:198.51.100.4", 40000)) as c:
        assert c.get("/reauth/garbage").status_code == 404
