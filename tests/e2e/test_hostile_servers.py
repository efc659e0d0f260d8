"""Issue 9, hostile input: mail and HTTP servers that answer garbage, truncated, oversized (MBs, no newline,
or lines without end), slow-drip replies, or hang up at once. Every check ends in ``error`` or ``fail`` with a
diagnosis code, within its timeout, never an exception; memory stays bounded while a multi-MB reply is read;
the runner keeps serving other checks afterwards.

The hostile server is a loopback thread (127.0.0.2, free port) with a certificate the config trusts through
``endpoints.ca_bundle`` (the sandbox's CA plus this one)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
import tracemalloc

import pytest

from checks.base import Status
from checks.diagnoses import get
from tests.e2e.dovecot import HOST, _self_signed

TIMEOUT = 3.0
MB = 1024 * 1024
CAP = 64 * MB  # a server never sends more than this on one connection (protects the test machine)
GREETING = {"imap": b"* OK ", "pop": b"+OK ", "smtp": b"220-"}


class Hostile:
    """One listening socket; each accepted connection gets ``self.mode``'s behaviour."""

    def __init__(self, cert, key, *, tls: bool):
        self.mode = "garbage"
        self.protocol = "imap"
        self.sent = 0
        self.closed_by_client = threading.Event()
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, mode: str, protocol: str = "imap") -> None:
        self.mode, self.protocol, self.sent = mode, protocol, 0
        self.closed_by_client.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _send(self, conn, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)
        if self.sent > CAP:
            raise BrokenPipeError("cap reached")

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            if self.mode == "close":
                raw.close()
                return
            if self.ctx is not None:
                raw.settimeout(10)
                conn = self.ctx.wrap_socket(raw, server_side=True)
            getattr(self, "_" + self.mode)(conn)
        except (OSError, ssl.SSLError):
            self.closed_by_client.set()
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _garbage(self, conn) -> None:
        self._send(conn, b"\x00\xff\xfe garbage \x1b[31m \xc3\x28 HELLO?\r\n")
        conn.settimeout(TIMEOUT * 3)
        while conn.recv(4096):
            self._send(conn, b"?? \xde\xad\xbe\xef what\r\n")

    def _truncated(self, conn) -> None:
        self._send(conn, GREETING[self.protocol] + b"server re")

    def _oversized(self, conn) -> None:  # several MB without a newline, then silence
        chunk = b"A" * MB
        self._send(conn, GREETING[self.protocol])
        for _ in range(8):
            self._send(conn, chunk)
        conn.settimeout(TIMEOUT * 3)
        conn.recv(1)

    def _endless(self, conn) -> None:  # well-formed lines that never end the reply
        line = GREETING[self.protocol] + b"x" * 60 + b"\r\n"
        block = line * 1000
        if self.protocol == "imap":
            self._send(conn, b"* OK ready\r\n")
            conn.settimeout(TIMEOUT * 3)
            conn.recv(4096)  # the client's first command, then untagged lines for ever
            block = (b"* CAPABILITY IMAP4rev1 " + b"X" * 40 + b"\r\n") * 1000
        elif self.protocol == "pop":
            self._send(conn, b"+OK ready\r\n")
            conn.settimeout(TIMEOUT * 3)
            conn.recv(4096)
            block = (b"-" * 60 + b"\r\n") * 1000
        while not self._stop.is_set():
            self._send(conn, block)

    def _drip(self, conn) -> None:  # one byte per 100 ms of a greeting that never ends
        stream = GREETING[self.protocol] + b"slow " * 10_000
        for b in stream:
            if self._stop.is_set():
                return
            self._send(conn, bytes([b]))
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


class HostileHTTP(Hostile):
    """The same, speaking broken HTTP/1.1 after reading the request head."""

    def _head(self, conn) -> None:
        conn.settimeout(TIMEOUT * 3)
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(65536)
            if not got:
                raise ConnectionResetError
            data += got

    def _garbage(self, conn) -> None:
        self._head(conn)
        self._send(conn, b"\x00\xffNOT HTTP AT ALL\r\n\r\n")

    def _nonjson(self, conn) -> None:
        self._head(conn)
        body = b"<html><body>Service Unavailable \xc3\x28 {not json</body></html>"
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n" % len(body) + body)

    def _truncated(self, conn) -> None:
        self._head(conn)
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                   b'{"value": [')

    def _oversized(self, conn) -> None:
        self._head(conn)
        body = b'{"value": "' + b"A" * (8 * MB) + b'"}'
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n" % len(body))
        for i in range(0, len(body), MB):
            self._send(conn, body[i:i + MB])

    def _endless(self, conn) -> None:  # a header that never ends
        self._head(conn)
        self._send(conn, b"HTTP/1.1 200 OK\r\n")
        while not self._stop.is_set():
            self._send(conn, b"X-Junk: " + b"y" * 60 + b"\r\n")

    def _drip(self, conn) -> None:
        self._head(conn)
        for b in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: aaaa\r\n" * 1000:
            if self._stop.is_set():
                return
            self._send(conn, bytes([b]))
            time.sleep(0.1)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return _self_signed(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def servers(certs):
    made = {"tls": Hostile(*certs, tls=True), "plain": Hostile(*certs, tls=False),
            "https": HostileHTTP(*certs, tls=True)}
    yield made
    for s in made.values():
        s.close()


def trust_both(w, cert, mutate):
    bundle = w.dir / "bundle.pem"
    bundle.write_bytes(open(w.sb.ca_path, "rb").read() + b"\n" + cert.read_bytes())  # noqa: PTH123

    def edit(doc):
        doc["endpoints"]["ca_bundle"] = str(bundle)
        doc["defaults"]["timeout"] = f"{TIMEOUT:g}s"
        mutate(doc)
    w.rewrite(edit)


def app_mailbox(ids):
    return {"service_principals": [ids["app_id"]],
            "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["app_id"]]}]}


@pytest.fixture
def mail_world(world, certs, servers):
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp",
                                                   "full_access_as_app"],
                                      "graph": ["Mail.ReadWrite"]},
              exchange=app_mailbox,
              checks={"token": {}, "imap": {}, "pop": {}, "smtp": {}, "graph_mail": {}, "ews": {}})
    https = f"https://{HOST}:{servers['https'].port}"
    trust_both(w, certs[0], lambda d: d["endpoints"].update(
        imap=f"{HOST}:{servers['tls'].port}", pop=f"{HOST}:{servers['tls'].port}",
        smtp=f"{HOST}:{servers['plain'].port}", graph=f"{https}/v1.0", ews=f"{https}/EWS/Exchange.asmx"))
    token = w.run("token")
    assert token.status == Status.OK, token.summary  # the token still comes from the sandbox
    return w


def run_bounded(w, kind: str, mode: str):
    """Run one check, timed; for the big replies once more tracing the peak of Python allocations (apart:
    tracing slows the parsing of a multi-MB body several times over)."""
    t0 = time.monotonic()
    outcome = w.run(kind)
    elapsed = time.monotonic() - t0
    peak = 0
    if mode in ("oversized", "endless"):
        tracemalloc.start()
        try:
            traced = w.run(kind)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert (traced.status, traced.code) == (outcome.status, outcome.code), (kind, mode, traced.summary)
    return outcome, elapsed, peak


def assert_diagnosed(outcome, elapsed, peak, label):
    assert outcome.status in (Status.ERROR, Status.FAIL), (label, outcome.status, outcome.summary)
    assert outcome.code, (label, outcome.summary)
    get(outcome.code)  # a known diagnosis with a title and a fix
    assert elapsed < TIMEOUT + 4, (label, elapsed)
    assert peak < 100 * MB, (label, peak)
    assert len(outcome.summary) < 5000 and all(len(t) <= 500 for t in outcome.transcript), label


MAIL_MODES = ["garbage", "truncated", "oversized", "endless", "drip", "close"]


@pytest.mark.parametrize("kind", ["imap", "pop", "smtp"])
def test_hostile_mail_servers_give_a_diagnosis_within_the_timeout(mail_world, servers, kind):
    server = servers["plain" if kind == "smtp" else "tls"]
    for mode in MAIL_MODES:
        server.reset(mode, kind)
        outcome, elapsed, peak = run_bounded(mail_world, kind, mode)
        assert_diagnosed(outcome, elapsed, peak, (kind, mode))
        # the client let go: no worker thread keeps reading a hostile stream after the check ended
        if mode in ("endless", "drip"):
            assert server.closed_by_client.wait(TIMEOUT + 3), (kind, mode, server.sent)
        # and the runner goes on serving other checks
        assert mail_world.run("token").status == Status.OK, (kind, mode)


HTTP_MODES = ["garbage", "nonjson", "truncated", "oversized", "endless", "drip", "close"]


@pytest.mark.parametrize("kind", ["graph_mail", "ews"])
def test_hostile_https_servers_give_a_diagnosis_within_the_timeout(mail_world, servers, kind):
    server = servers["https"]
    for mode in HTTP_MODES:
        server.reset(mode, "http")
        outcome, elapsed, peak = run_bounded(mail_world, kind, mode)
        assert_diagnosed(outcome, elapsed, peak, (kind, mode))
        assert mail_world.run("token").status == Status.OK, (kind, mode)


def test_the_runner_serves_other_checks_while_one_reads_a_hostile_stream(mail_world, servers):
    servers["tls"].reset("drip", "imap")
    rt = mail_world.runtime

    async def both():
        return await asyncio.gather(rt.runner.run_one("subject", "imap"), rt.runner.run_one("subject", "token"))

    t0 = time.monotonic()
    imap, token = asyncio.run(both())
    assert token.outcome.status == Status.OK
    assert imap.outcome.status == Status.ERROR and imap.outcome.code == "timeout", imap.outcome.summary
    assert time.monotonic() - t0 < TIMEOUT + 4
