"""The mail protocol servers' common part: one asyncio loop in a thread, listening sockets bound at
construction (ports known before start), TLS, protocol faults (hang / latency) and stats."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable

from ..state import State
from ..tokens import Signer

HOSTNAME = "SN4PR0501MB3760.namprd05.prod.outlook.com"
MAX_LINE = 64 * 1024


async def counting_sessions(servers, conn: Conn, serve) -> None:
    """Run ``serve(servers, conn, sessions)``; the sessions it opened (``State.session_opened``, appended to
    ``sessions``) are closed when the connection ends, however it ends."""
    sessions: list[tuple[str, str]] = []
    try:
        await serve(servers, conn, sessions)
    finally:
        for key in sessions:
            servers.state.session_closed(key)


class Conn:
    """One client connection: reading lines, writing replies (with the protocol's latency), STARTTLS."""

    def __init__(self, protocol: str, state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.protocol, self.state = protocol, state
        self.reader, self.writer = reader, writer
        self.mailbox_key: str | None = None  # stats key once logged in

    async def delay(self) -> None:
        f = self.state.protocol_faults.get(self.protocol, {})
        if f.get("mode") == "latency" and f.get("latency_ms"):
            await asyncio.sleep(f["latency_ms"] / 1000)

    async def send(self, *lines: str | bytes, delay: bool = True) -> None:
        if delay:
            await self.delay()
        for line in lines:
            self.writer.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        await self.writer.drain()

    async def readline(self) -> str | None:
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def count(self, command: str) -> None:
        self.state.count_mail(self.protocol, command, self.mailbox_key)

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        await self.writer.start_tls(ctx)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


Handler = Callable[[Conn], "asyncio.Future"]


class MailServers:
    """IMAP (implicit TLS), POP3 (implicit TLS) and SMTP (STARTTLS) on ephemeral or given ports."""

    def __init__(self, state: State, signer: Signer, host: str, cert_path, key_path,
                 ports: dict[str, int] | None = None):
        from . import imap, pop, smtp

        self.state, self.signer, self.host = state, signer, host
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(str(cert_path), str(key_path))
        self.handlers = {"imap": imap.serve, "pop": pop.serve, "smtp": smtp.serve}
        ports = ports or {}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socks: dict[str, socket.socket] = {}
        for name in self.handlers:
            s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see server.py
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, ports.get(name, 0)))
            s.listen(128)
            s.setblocking(False)
            self.socks[name] = s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    @property
    def addresses(self) -> dict[str, str]:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return {name: f"{h}:{s.getsockname()[1]}" for name, s in self.socks.items()}

    async def _accept(self, name: str, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(sock)
            task = loop.create_task(self._handle(name, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, name: str, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.state.count_mail(name, "connections")
        if self.state.protocol_faults.get(name, {}).get("mode") == "hang":
            try:  # accept, never answer: no TLS handshake, no greeting
                while await loop.sock_recv(client, 4096):
                    pass
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                client.close()
            return
        done = loop.create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            conn = Conn(name, self.state, reader, writer)
            try:
                await self.handlers[name](self, conn)
            except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.CancelledError, OSError):
                pass
            finally:
                conn.close()
                self._writers.discard(writer)
                if not done.done():
                    done.set_result(None)

        reader = asyncio.StreamReader(limit=MAX_LINE)
        protocol = asyncio.StreamReaderProtocol(reader, on_connect)
        tls = self.ssl if name in ("imap", "pop") else None  # implicit TLS: the handshake comes first
        try:
            extra = {"ssl": tls, "ssl_handshake_timeout": 10} if tls else {}
            await loop.connect_accepted_socket(lambda: protocol, client, **extra)
            await done
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError, ValueError):
            client.close()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        for name, sock in self.socks.items():
            task = loop.create_task(self._accept(name, sock))
            self._tasks.add(task)
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.sleep(0.05)

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            return

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            try:
                self.loop.run_until_complete(self._main())
            finally:
                self.loop.close()

        self._thread = threading.Thread(target=run, name="sandbox-mail", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox mail servers did not start")

    def stop(self) -> None:
        if self._thread is not None and self.loop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)
        self._thread = None
        for s in self.socks.values():
            with contextlib.suppress(OSError):
                s.close()
