"""Every connection mailwarden opens or accepts, and every one the sandbox accepts, has Nagle's algorithm off.

With it on, a reply or request written in two parts waited for the other side's delayed ACK: imaplib sends an
AUTHENTICATE response and its CRLF in two writes, uvicorn a response's headers and its body. That added
about 40 ms per HTTP request and per IMAP login on loopback (a round trip or more on a real network), which
the benchmark measured as mailwarden's own slowness (bench/RESULTS.md, session 3)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx

import mailwarden.checks.imap  # noqa: F401 (loads the submodule)
import mailwarden.checks.pop  # noqa: F401 (loads the submodule)
import mailwarden.checks.smtp  # noqa: F401 (loads the submodule)
from mailwarden import checks
from mailwarden.checks.base import Status
from mailwarden.monitor.web.server import listening_socket

from .test_mailbox_checks import shared_mailbox


def nodelay(sock) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_the_protocol_checks_send_with_nagle_off(world, monkeypatch):
    seen: dict[str, list[bool]] = {"imap": [], "pop": [], "smtp": []}
    for kind, module in (("imap", checks.imap), ("pop", checks.pop), ("smtp", checks.smtp)):
        real = module.no_delay

        def record(sock, kind=kind, real=real):
            out = real(sock)
            seen[kind].append(nodelay(out))
            return out

        monkeypatch.setattr(module, "no_delay", record)
    w = world("delegated", checks={"token": {}, "imap": {}, "pop": {}, "smtp": {}}, exchange=shared_mailbox())
    w.sign_in()
    for kind in seen:
        outcome = w.run(kind)
        assert outcome.status == Status.OK, (kind, outcome.summary)
    assert seen == {"imap": [True], "pop": [True], "smtp": [True]}


def test_the_sandbox_answers_with_nagle_off(sandbox):
    """HTTP (Entra ID, Graph, EWS) and the IMAP/POP/SMTP servers: the connections they accept."""
    ctx = ssl.create_default_context(cafile=str(sandbox.ca_path))
    with httpx.Client(verify=ctx) as client:
        client.get(f"{sandbox.base_url}/common/v2.0/.well-known/openid-configuration")
        conns = list(sandbox._server.server_state.connections)
        assert conns and all(nodelay(c.transport.get_extra_info("socket")) for c in conns)
    for name in ("imap", "pop", "smtp"):
        host, port = sandbox.mail.addresses[name].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            stream = ctx.wrap_socket(raw, server_hostname=host) if name != "smtp" else raw
            stream.recv(1024)  # the greeting: the server has accepted and set up the connection
            writers = list(sandbox.mail._writers)
            assert writers and all(nodelay(w.get_extra_info("socket")) for w in writers), name


def test_the_web_app_answers_with_nagle_off():
    sock = listening_socket("127.0.0.1", 0, "127.0.0.1:0")
    port = sock.getsockname()[1]
    flags: list[bool] = []

    async def main() -> None:
        async def on_connect(reader, writer):
            flags.append(nodelay(writer.get_extra_info("socket")))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)  # as uvicorn serves it
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.read()
            writer.close()

    asyncio.run(main())
    assert flags == [True]


def test_the_smtp_check_looks_its_ehlo_name_up_once(world, monkeypatch):
    """smtplib finds the name EHLO gives (socket.getfqdn: a reverse DNS lookup) for every connection; the check
    finds it once."""
    from mailwarden.checks.smtp import ehlo_name

    calls = []
    real = socket.getfqdn
    monkeypatch.setattr(socket, "getfqdn", lambda *a: calls.append(a) or real(*a))
    ehlo_name.cache_clear()
    w = world("delegated", checks={"token": {}, "smtp": {}}, exchange=shared_mailbox())
    w.sign_in()
    for _ in range(3):
        assert w.run("smtp").status == Status.OK
    assert len(calls) == 1
