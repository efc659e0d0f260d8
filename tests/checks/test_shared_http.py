"""The Graph and EWS checks of one event loop share kept-alive HTTP connections (checks.graph_client.SharedHttp): no
TCP connect and TLS handshake per check. A kept-alive connection can be dropped by the server just as a check sends
on it (an idle timeout, a restart: the sandbox's own keep-alive once closed a connection as MSAL reused it, a flaky
test of 2026-11-24); that must not fail the check, which would be a false alert. So a request that may be sent twice
(GET, or marked RESEND as EWS's read-only POSTs are) goes once more on a new connection; one that may not (Graph's
sendMail) is not sent twice; a server that drops every request fails the check after two sends, not more."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mailwarden.checks.graph_client import POOLS, RESEND, SharedHttp
from mailwarden.checks.tls import http_verify


class DroppingServer:
    """Plain HTTP/1.1 with keep-alive; the ``drop``-th request of every connection (and each after it) is read and
    the connection closed without a reply, as a server does whose idle timeout ends as the request arrives."""

    def __init__(self, drop: int):
        self.drop = drop
        self.requests: list[tuple[int, str]] = []  # (connection number, request line)
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn, served = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                self.requests.append((conn, line))
                served += 1
                if served >= self.drop:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def _serve(drop: int, work) -> DroppingServer:
    server = DroppingServer(drop)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    shared = SharedHttp()
    try:
        await work(shared.client(verify=http_verify(None), timeout=5.0, trust_env=False), f"http://127.0.0.1:{port}")
    finally:
        shared.close()
        await asyncio.sleep(0)
        srv.close()
        await srv.wait_closed()
    return server


@pytest.mark.parametrize(("method", "marked", "resent"), [
    ("GET", False, True),     # Graph's reads
    ("POST", True, True),     # EWS GetFolder / FindItem: read-only, marked RESEND
    ("POST", False, False),   # Graph's sendMail (a canary): never sent twice
])
def test_a_request_on_a_dropped_kept_alive_connection(method, marked, resent):
    async def work(http: httpx.AsyncClient, base: str) -> None:
        first = await http.request(method, f"{base}/one", content=b"x", extensions={RESEND: True} if marked else {})
        assert first.status_code == 200
        # the second request goes out on the kept-alive connection, which the server drops without a reply
        kwargs = {"content": b"x", "extensions": {RESEND: True} if marked else {}}
        if resent:
            assert (await http.request(method, f"{base}/two", **kwargs)).status_code == 200
        else:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.request(method, f"{base}/two", **kwargs)

    server = asyncio.run(_serve(2, work))
    seconds = [r for r in server.requests if r[1].endswith("/two HTTP/1.1")]
    assert [c for c, _ in seconds] == ([1, 2] if resent else [1])  # resent once, on a new connection
    assert server.connections == (2 if resent else 1)


def test_a_server_dropping_every_request_fails_after_two_sends():
    """No retry loop: a server that really drops the connection is reported by the check (after a second send)."""
    async def work(http: httpx.AsyncClient, base: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{base}/x")

    server = asyncio.run(_serve(1, work))
    assert len(server.requests) == 2 and server.connections == 2


def test_checks_of_one_loop_share_a_client_and_its_connection():
    """Two requests of two checks on one loop: one connection (no second connect and TLS handshake); the same
    settings give the same client, other settings (EWS's TLS 1.2 context, another timeout) another one."""
    async def work(http: httpx.AsyncClient, base: str) -> None:
        assert (await http.get(f"{base}/a")).status_code == 200
        assert (await http.get(f"{base}/b")).status_code == 200

    server = asyncio.run(_serve(10, work))
    assert server.connections == 1 and len(server.requests) == 2

    async def clients() -> tuple[bool, bool, bool, bool]:
        shared = SharedHttp()
        a = shared.client(verify=http_verify(None), timeout=5.0, trust_env=False)
        b = shared.client(verify=http_verify(None), timeout=5.0, trust_env=False)
        c = shared.client(verify=http_verify(None), timeout=9.0, trust_env=False)
        shared.close()
        await asyncio.sleep(0.05)
        return a is b, a is not c, a.is_closed, c.is_closed

    assert asyncio.run(clients()) == (True, True, True, True)


def test_a_runner_on_a_new_loop_gets_new_clients():
    """The demo and `mailwarden check` run several asyncio.run() on one runtime: a client bound to a finished loop
    is not handed to the next one."""
    shared = SharedHttp()

    async def one() -> httpx.AsyncClient:
        return shared.client(verify=http_verify(None), timeout=5.0, trust_env=False)

    first, second = asyncio.run(one()), asyncio.run(one())
    assert first is not second


def slow_reply(seconds: float):
    """A server that answers each connection's request ``seconds`` late, then closes."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(seconds)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    return reply


def test_a_reload_does_not_close_the_connection_under_a_check_still_running():
    """A config reload closes the old runtime while its last checks run: their request completes (closed under
    them, it would fail: a false alert), and the old clients are closed once the grace is over."""
    async def go() -> tuple[int, bool, bool]:
        srv = await asyncio.start_server(slow_reply(0.5), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        shared = SharedHttp()
        http = shared.client(verify=http_verify(None), timeout=5.0, trust_env=False)
        check = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/inbox"))
        await asyncio.sleep(0.1)  # the request is out
        shared.close(grace=1.0)
        status = (await check).status_code
        open_after_check = not http.is_closed
        await asyncio.sleep(1.2)
        srv.close()
        await srv.wait_closed()
        return status, open_after_check, http.is_closed

    assert asyncio.run(go()) == (200, True, True)


def test_a_shared_client_has_no_connection_cap_of_its_own():
    """A worker may run more Graph checks at once (--concurrency) than httpx's default pool of 100 connections: a
    check waiting for a pooled connection would time out, a false alert. 120 requests at once all get through."""
    async def go() -> list[int]:
        srv = await asyncio.start_server(slow_reply(0.6), "127.0.0.1", 0, backlog=256)
        port = srv.sockets[0].getsockname()[1]
        shared = SharedHttp()
        http = shared.client(verify=http_verify(None), timeout=0.5, trust_env=False)  # pool wait < the reply
        got = await asyncio.gather(*(http.get(f"http://127.0.0.1:{port}/{i}", timeout=httpx.Timeout(
            5.0, pool=0.3)) for i in range(120)), return_exceptions=True)
        shared.close()
        srv.close()
        await srv.wait_closed()
        return [g.status_code if isinstance(g, httpx.Response) else type(g).__name__ for g in got]

    assert asyncio.run(go()) == [200] * 120


def test_the_environment_s_proxy_is_used_and_its_dropped_connections_resent(monkeypatch):
    """A site whose traffic goes through a proxy (HTTP_PROXY / HTTPS_PROXY, trust_env as for every client without a
    configured CA bundle): the shared client goes through it as a check's own client did (a transport passed to httpx
    turns the environment's proxies off: every Graph and EWS check would fail to connect), and a connection to the
    proxy dropped without a reply is resent too."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def go() -> DroppingServer:
        proxy = DroppingServer(2)
        srv = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}")
        shared = SharedHttp()
        http = shared.client(verify=http_verify(None), timeout=5.0, trust_env=True)
        assert (await http.get("http://graph.example.invalid/v1.0/one")).status_code == 200
        assert (await http.get("http://graph.example.invalid/v1.0/two")).status_code == 200
        shared.close()
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()
        return proxy

    proxy = asyncio.run(go())
    assert [line for _, line in proxy.requests] == [
        "GET http://graph.example.invalid/v1.0/one HTTP/1.1", "GET http://graph.example.invalid/v1.0/two HTTP/1.1",
        "GET http://graph.example.invalid/v1.0/two HTTP/1.1"]  # through the proxy; the dropped one resent


def test_no_cookie_goes_from_one_check_to_the_next():
    """Exchange Online sets cookies on its replies (EWS's X-BackEndCookie names a mailbox's server and user): a
    client shared by every mailbox and tenant keeps none, so none goes out with another mailbox's request."""
    heads: list[bytes] = []

    async def cookie_setting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: X-BackEndCookie=S-1-5-21-1=u; "
                             b"path=/EWS; secure\r\nSet-Cookie: affinity=a1\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def go() -> None:
        srv = await asyncio.start_server(cookie_setting, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        shared = SharedHttp()
        http = shared.client(verify=http_verify(None), timeout=5.0, trust_env=False)
        for mailbox in ("a@tenant-a.example", "b@tenant-b.example"):
            await http.post(f"{base}/EWS/Exchange.asmx", content=mailbox.encode(), extensions={RESEND: True})
        shared.close()
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()

    asyncio.run(go())
    assert len(heads) == 2
    assert b"cookie:" not in heads[1].lower()


def test_a_burst_of_mailboxes_is_spread_over_the_pools_and_each_mailbox_keeps_its_own():
    """httpcore's pool costs O(n^2) in the connections it holds for every request (encode/httpcore#1035): a burst of
    150 Graph checks on one pool spent a third of their CPU there. The shared client of a setting is ``POOLS``
    clients, a mailbox's checks always on the same one: a burst of 40 mailboxes opens its 40 connections over every
    pool, none holding more than half of them, and each mailbox checked again goes out on a kept-alive connection
    of its pool (no new connection: no TCP connect and TLS handshake)."""
    mailboxes = [f"desk{i}@contoso.example" for i in range(40)]

    async def go() -> tuple[int, dict[int, int], int, int]:
        connections = 0

        async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await asyncio.sleep(0.2)  # the burst's requests are all out at once
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        srv = await asyncio.start_server(keep_alive, "127.0.0.1", 0, backlog=128)
        base = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        shared = SharedHttp()

        def client(mailbox: str) -> httpx.AsyncClient:
            return shared.client(verify=http_verify(None), timeout=5.0, trust_env=False, spread=mailbox)

        got = await asyncio.gather(*(client(m).get(f"{base}/{m}") for m in mailboxes))
        assert [r.status_code for r in got] == [200] * len(mailboxes)
        burst = connections
        share: dict[int, int] = {}
        for m in mailboxes:
            assert client(m) is client(m)
            share[id(client(m))] = share.get(id(client(m)), 0) + 1
        for m in mailboxes:  # again, one after another
            assert (await client(m).get(f"{base}/{m}")).status_code == 200
        shared.close()
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()
        return burst, share, connections, POOLS

    burst, share, after, pools = asyncio.run(go())
    assert burst == len(mailboxes) and after == burst  # the second round opened nothing
    assert len(share) == pools and max(share.values()) <= len(mailboxes) // 2
