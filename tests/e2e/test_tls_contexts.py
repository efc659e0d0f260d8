"""The checks' TLS contexts are built once per CA bundle and shared (checks.tls), yet still verify, and a
bundle replaced on disk (a CA rotated) is trusted from the next check on."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import certifi
import pytest

from mailwarden.checks.mailbox import tls_context
from mailwarden.checks.tls import http_verify, mail_context


def handshake(ctx: ssl.SSLContext, address: str) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.recv(64)  # the IMAP greeting


def test_a_replaced_ca_bundle_is_trusted_from_the_next_check(sandbox, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())  # public CAs only: not the sandbox's
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls_context(str(bundle)), sandbox.mail.addresses["imap"])  # what the IMAP/POP/SMTP checks use
    bundle.write_text(Path(sandbox.ca_path).read_text())  # rotated to the CA that signed the server
    handshake(tls_context(str(bundle)), sandbox.mail.addresses["imap"])


def test_one_context_per_bundle_is_shared_and_verifies(sandbox, monkeypatch):
    ca = str(sandbox.ca_path)
    assert mail_context(ca) is mail_context(ca)
    assert mail_context(ca).verify_mode == ssl.CERT_REQUIRED and mail_context(ca).check_hostname
    assert mail_context(ca).minimum_version == ssl.TLSVersion.TLSv1_2
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert http_verify(None) is http_verify(None)  # certifi's bundle, as httpx's verify=True would load
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the environment's bundle wins, as in httpx
    assert http_verify(None) is http_verify(ca)
