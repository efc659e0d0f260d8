"""Issue 9, hostile input: mail and HTTP servers that answer garbage, truncated, oversized (MBs, no newline,
or lines without end), slow-drip replies, or hang up at once. Every check ends in ``error`` or ``fail`` with a
diagnosis code, within its timeout, never an exception; memory stays bounded while a multi-MB reply is read;
the runner keeps serving other checks afterwards. HTTP bodies past ``MAX_REPLY_BYTES`` (announced, chunked,
or gzip inflating to 64 MB) are cut off at the cap: ``reply_too_large`` naming the cap and the URL, for the
Graph and EWS checks and the credential read.

The hostile server is a loopback thread (127.0.0.2, free port) with a certificate the config trusts through
``endpoints.ca_bundle`` (the sandbox's CA plus this one)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import json
import socket
import ssl
import threading
import time
import tracemalloc
import zlib

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import get
from mailwarden.checks.graph_client import MAX_REPLY_BYTES
from mailwarden.monitor.credentials import CredentialReader
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
        self._per_conn: dict[int, int] = {}
        self.closed_by_client = threading.Event()
        self.received: list[str] = []  # what the echo mode was sent
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
        self._per_conn: dict[int, int] = {}
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
        mine = self._per_conn[id(conn)] = self._per_conn.get(id(conn), 0) + len(data)
        if mine > CAP:  # per connection: a second run in the same mode must meet the same endless stream
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

    def _echo(self, conn) -> None:
        """An IMAP server that refuses the login and echoes what it was sent, base64 and decoded (the login
        carries the bearer token): what it received is kept in ``self.received``."""
        conn.settimeout(TIMEOUT * 3)
        reader = conn.makefile("rb")
        self._send(conn, b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] echo ready\r\n")
        for line in reader:
            tag, _, rest = line.strip().partition(b" ")
            verb, _, arg = rest.partition(b" ")
            if verb.upper() == b"CAPABILITY":
                self._send(conn, b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR\r\n" + tag + b" OK done\r\n")
            elif verb.upper() == b"AUTHENTICATE":
                payload = arg.partition(b" ")[2]
                if not payload:
                    self._send(conn, b"+ \r\n")
                    payload = reader.readline().strip()
                self.received.append(payload.decode())
                decoded = base64.b64decode(payload).replace(b"\x01", b" ")
                self._send(conn, tag + b" NO [AUTHENTICATIONFAILED] you sent " + payload + b" = " + decoded + b"\r\n")
            else:
                self._send(conn, b"* BYE\r\n" + tag + b" OK bye\r\n")
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


# Bodies built once, outside the traced runs (tracemalloc sees this process's server threads too).
CHUNK = b"%x\r\n%s\r\n" % (64 * 1024, b"A" * (64 * 1024))


@functools.cache
def big_body() -> bytes:
    return b'{"value": "' + b"A" * (8 * MB) + b'"}'


@functools.cache
def gzip_bomb() -> bytes:
    return gzip.compress(b'{"value": "' + b"A" * (64 * MB) + b'"}', compresslevel=9)


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
        body = memoryview(big_body())
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n" % len(body))
        for i in range(0, len(body), MB):
            self._send(conn, body[i:i + MB])

    def _chunked(self, conn) -> None:  # 8 MB announced by nothing: chunked, no Content-Length
        self._head(conn)
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n")
        self._send(conn, b'%x\r\n{"value": "\r\n' % len(b'{"value": "'))
        chunk = CHUNK
        for _ in range(8 * MB // (64 * 1024)):
            self._send(conn, chunk)
        self._send(conn, b'2\r\n"}\r\n0\r\n\r\n')

    def _gzip(self, conn) -> None:  # 64 KB on the wire that inflate to 64 MB
        self._head(conn)
        body = gzip_bomb()
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    def _served(self, conn) -> None:  # a well-formed reply: self.reply = (content type, encoding, body)
        conn.settimeout(TIMEOUT * 3)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:  # the whole request first: closing with unread data would reset the connection
            got = conn.recv(65536)
            if not got:
                break
            rest += got
        ctype, encoding, body = self.reply
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n" % (ctype, encoding, len(body)) + body)

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
    big_body(), gzip_bomb()  # built before any check waits on them
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
    if mode in BIG_MODES:
        tracemalloc.start()
        try:
            traced = w.run(kind)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        # tracing slows parsing several times over, so the traced run may reach the check's timeout before the
        # reply limit: either way it must end diagnosed
        assert traced.code in (outcome.code, "timeout"), (kind, mode, traced.summary)
        assert traced.status in (Status.ERROR, Status.FAIL), (kind, mode, traced.summary)
    return outcome, elapsed, peak


def assert_diagnosed(outcome, elapsed, peak, label):
    assert outcome.status in (Status.ERROR, Status.FAIL), (label, outcome.status, outcome.summary)
    assert outcome.code, (label, outcome.summary)
    get(outcome.code)  # a known diagnosis with a title and a fix
    assert elapsed < TIMEOUT + 4, (label, elapsed)
    assert peak < 100 * MB, (label, peak)
    assert len(outcome.summary) < 5000 and all(len(t) <= 500 for t in outcome.transcript), label


BIG_MODES = ("oversized", "chunked", "gzip", "endless")
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


HTTP_MODES = ["garbage", "nonjson", "truncated", "oversized", "chunked", "gzip", "endless", "drip", "close"]
# bodies past the cap: announced (Content-Length 8 MB), unannounced (chunked 8 MB), compressed (64 KB of gzip
# inflating to 64 MB)
CAPPED_MODES = ("oversized", "chunked", "gzip")


@pytest.mark.parametrize("kind", ["graph_mail", "ews"])
def test_hostile_https_servers_give_a_diagnosis_within_the_timeout(mail_world, servers, kind):
    server = servers["https"]
    for mode in HTTP_MODES:
        server.reset(mode, "http")
        outcome, elapsed, peak = run_bounded(mail_world, kind, mode)
        assert_diagnosed(outcome, elapsed, peak, (kind, mode))
        if mode in CAPPED_MODES:
            assert_cut_off(outcome, peak, server, (kind, mode))
        assert mail_world.run("token").status == Status.OK, (kind, mode)


def assert_cut_off(outcome, peak, server, label):
    """Reading stopped at the cap: the check says so (what, where), ends before its timeout and holds far
    less than the body in memory."""
    assert outcome.status == Status.ERROR and outcome.code == "reply_too_large", (label, outcome.summary)
    assert f"exceeded {MAX_REPLY_BYTES} bytes" in outcome.summary, (label, outcome.summary)
    assert f"https://{HOST}:{server.port}/" in outcome.summary, (label, outcome.summary)
    assert outcome.latency_ms < TIMEOUT * 1000, (label, outcome.latency_ms)
    assert peak < 8 * MAX_REPLY_BYTES, (label, peak)  # the body is 8 MB (64 MB inflated)


FOLDER = b'{"id": "inbox", "displayName": "Inbox", "totalItemCount": 7, "unreadItemCount": 2}'
GETFOLDER = (b'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
             b'<s:Body><m:GetFolderResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
             b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages>'
             b'<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
             b'<m:Folders><t:Folder><t:TotalCount>7</t:TotalCount><t:UnreadCount>2</t:UnreadCount></t:Folder>'
             b'</m:Folders></m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse></s:Body>'
             b'</s:Envelope>')
ENCODINGS = {"identity": lambda b: b, "gzip": gzip.compress, "deflate": zlib.compress,
             "deflate-raw": lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("kind", ["graph_mail", "ews"])
def test_replies_within_the_cap_are_read_whatever_their_encoding(mail_world, servers, kind, encoding):
    """The cap decodes gzip and deflate itself (zlib-wrapped as RFC 9110 says, or raw as some servers send):
    a compressed reply under the cap reads as Microsoft's does."""
    server = servers["https"]
    ctype, body = (b"application/json", FOLDER) if kind == "graph_mail" else (b"text/xml; charset=utf-8", GETFOLDER)
    server.reset("served", "http")
    server.reply = (ctype, encoding.split("-")[0].encode(), ENCODINGS[encoding](body))
    outcome = mail_world.run(kind)
    assert outcome.status == Status.OK, (kind, encoding, outcome.code, outcome.summary)
    assert outcome.metrics["message_count"] == 7 and outcome.metrics["unread_count"] == 2, outcome.metrics


def test_the_credential_read_stops_at_the_reply_cap(mail_world, servers):
    """secret_expiry's read of the app object from Graph (monitor/credentials.py) has the same cap."""
    server = servers["https"]
    rt = mail_world.runtime
    for mode in CAPPED_MODES:
        server.reset(mode, "http")
        reader = CredentialReader(rt.config, rt.tokens, None, ttl_s=0, timeout_s=TIMEOUT)
        tracemalloc.start()
        try:
            t0 = time.monotonic()
            read = asyncio.run(reader.read("subject"))
            elapsed = time.monotonic() - t0
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert not read.ok and read.code == "graph_unreadable", (mode, read)
        assert f"exceeded {MAX_REPLY_BYTES} bytes" in read.reason, (mode, read.reason)
        assert f"https://{HOST}:{server.port}/v1.0/applications" in read.reason, (mode, read.reason)
        assert elapsed < TIMEOUT, (mode, elapsed)
        assert peak < 8 * MAX_REPLY_BYTES, (mode, peak)


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


def test_a_server_echoing_the_login_puts_no_token_on_stdout(mail_world, servers):
    """Attacks `mailwarden check --format json` (item 3 of the hardening issue) with an IMAP server that echoes the
    XOAUTH2 login it was sent, base64 and decoded, in its refusal: the bearer token and the SASL string were printed
    in ``details`` (the database copy was clean). Expected: the refusal is diagnosed, and neither the SASL string
    nor the token appears on stdout, in any form."""
    from typer.testing import CliRunner

    from mailwarden.monitor.cli import app

    server = servers["tls"]
    server.reset("echo", "imap")
    res = CliRunner().invoke(app, ["check", "-c", str(mail_world.config_path), "-i", "subject", "--check", "imap",
                                   "--format", "json", "--no-alerts"])
    assert server.received, res.output  # the server did get a login
    rows = json.loads(res.stdout)
    imap = next(r for r in rows if r["check"] == "imap")
    assert imap["status"] == "fail" and imap["code"], imap
    for payload in server.received:
        token = base64.b64decode(payload).decode().split("auth=Bearer ")[1].strip("\x01")
        for secret in (payload, token, token[:40], token.split(".")[1]):
            assert secret not in res.output, "a login secret reached stdout"
