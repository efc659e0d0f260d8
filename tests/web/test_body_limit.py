"""Request bodies: the 64 KiB limit holds while reading, so an outsider cannot make the process hold a large
body (an unauthenticated 300 MiB POST to /login grew the process by about 300 MB)."""

from __future__ import annotations

import asyncio
import socket
import time

from mailwarden.monitor.web.server import WebServer, listening_socket

CHUNK = 64 * 1024


def call(app, path: str, headers: list[tuple[bytes, bytes]], total: int) -> tuple[int, int, dict]:
    """POST ``total`` bytes to ``path`` straight through ASGI, 64 KiB per message: (status, bytes the app pulled,
    response headers)."""
    pulled, sent = [0], []

    async def receive():
        if pulled[0] >= total:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled[0] += CHUNK
        return {"type": "http.request", "body": b"a" * CHUNK, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8080"),
                         (b"content-type", b"application/x-www-form-urlencoded"), *headers],
             "client": ("198.51.100.9", 40000), "server": ("127.0.0.1", 8080)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], pulled[0], {k.decode(): v.decode() for k, v in start["headers"]}


def test_a_growing_body_is_refused_once_it_passes_the_limit(world):
    """Attacks memory with a chunked (unannounced) body: it was read whole before its size was checked. The
    app stops at the limit: 413 after at most one message past 64 KiB, with the security headers."""
    status, pulled, headers = call(world.app(), "/login", [(b"transfer-encoding", b"chunked")], 16 * 1024 * 1024)
    assert status == 413 and pulled <= 2 * CHUNK, (status, pulled)
    assert "content-security-policy" in headers


def test_an_announced_oversized_body_is_refused_before_reading(world):
    """Attacks memory with a Content-Length over the limit: the body was read before the size was looked at.
    Now 413 before a byte is read, and the connection is closed."""
    status, pulled, headers = call(world.app(), "/login", [(b"content-length", str(300 * 1024 * 1024).encode())],
                                   1024 * 1024)
    assert (status, pulled) == (413, 0)
    assert headers.get("connection") == "close"


def test_over_a_real_socket_an_oversized_post_is_answered_413_at_once(world):
    """The same through uvicorn on loopback, as `serve` runs it: a POST announcing 300 MiB and sending none of
    it is answered 413 at once (it waited for the body), and a chunked body is cut off long before 64 MiB."""

    def announced(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/x-www-form-"
                      b"urlencoded\r\nContent-Length: 314572800\r\n\r\n")
            return s.recv(4096)

    def chunked(port: int) -> tuple[bytes, int]:
        sent, chunk = 0, b"%x\r\n%s\r\n" % (CHUNK, b"a" * CHUNK)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/x-www-form-"
                      b"urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.setblocking(False)
            deadline = time.monotonic() + 20
            while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
                try:
                    data = s.recv(4096)
                    return data, sent
                except BlockingIOError:
                    pass
                except OSError:
                    return b"", sent
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:  # reset by the server after its answer
                    break
            s.setblocking(True)
            try:
                return s.recv(4096), sent
            except OSError:
                return b"", sent

    async def main():
        sock = listening_socket("127.0.0.1", 0, "127.0.0.1:0")
        server = WebServer(world.app(), sock, "http://127.0.0.1")
        await server.start()
        try:
            port = sock.getsockname()[1]
            first = await asyncio.to_thread(announced, port)
            second = await asyncio.to_thread(chunked, port)
        finally:
            await server.stop()
        return first, second

    first, (answer, sent) = asyncio.run(main())
    assert first.startswith(b"HTTP/1.1 413"), first[:200]
    assert sent < 64 * 1024 * 1024 and (answer == b"" or answer.startswith(b"HTTP/1.1 413")), (answer[:100], sent)
