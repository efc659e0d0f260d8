"""A real Dovecot (Debian's package) that validates the sandbox's JWTs itself: IMAPS, POP3S and
submission with STARTTLS on 127.0.0.2, relaying to an aiosmtpd sink. Settings from
shared/REAL_MAIL_SERVER.md; each run gets a fresh base_dir (a stale anvil socket delays auth by 5 s).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.2"  # not 127.0.0.1: Dovecot treats client == server address as secure and skips TLS rules
NEEDED_BUILD = "+deb12u7"  # the u6 build has no `audience` setting and no scope check


def unusable_reason() -> str | None:
    if shutil.which("dovecot") is None:
        return "Dovecot is not installed (apt-get install dovecot-core dovecot-imapd dovecot-pop3d " \
               "dovecot-submissiond)"
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dovecot-core"], capture_output=True,
                                 text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot read Dovecot's package version: {exc}"
    if NEEDED_BUILD not in version:
        return f"Dovecot {version} lacks the oauth2 audience/scope checks these tests rely on (needs {NEEDED_BUILD})"
    return None


def _free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dovecot test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "dovecot.crt", directory / "dovecot.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


@dataclass
class Dovecot:
    directory: Path
    issuer: str  # the sandbox tenant's issuer, https://sts.windows.net/<tid>/
    signing_kid: str
    signing_key_pem: str | bytes
    relay_port: int
    audience: str = "https://outlook.office.com"

    def start(self) -> Dovecot:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        self.cert, self.key = _self_signed(d)
        # The auth process runs as the dovecot user: the key directory must be reachable by it, and
        # pytest's tmp_path sits under a 0700 directory. So the keys live in their own 0755 directory.
        self.keys = Path(tempfile.mkdtemp(prefix="mailwarden-dovecot-keys-"))
        os.chmod(self.keys, 0o755)
        self.trust_client("default")
        self.imap_port, self.pop_port, self.smtp_port = _free_port(), _free_port(), _free_port()
        keys = self.keys
        passdbs = []
        for proto, scope in (("imap", "IMAP.AccessAsUser.All"), ("pop3", "POP.AccessAsUser.All"),
                             ("submission", "SMTP.Send")):
            args = d / f"oauth2-{proto}.conf"
            args.write_text(
                "introspection_mode = local\n"
                f"local_validation_key_dict = fs:posix:prefix={keys}/\n"
                f"issuers = {self.issuer}\n"
                f"audience = {self.audience}\n"
                "username_attribute = upn\n"
                f"scope = {scope}\n")
            passdbs.append(f"protocol {proto} {{\n  passdb {{\n    driver = oauth2\n    mechanisms = xoauth2 "
                           f"oauthbearer\n    args = {args}\n  }}\n}}\n")
        # Dovecot's sockets live under base_dir, and a unix socket's path is at most 107 bytes: pytest's tmp_path under
        # pytest-xdist (.../popen-gw1/<test name>/dovecot0/run/token-login/imap-urlauth) is longer. A short directory.
        self.run = Path(tempfile.mkdtemp(prefix="mw-dv-"))
        os.chmod(self.run, 0o755)
        # Dovecot never opens mail as root: the mail homes belong to the dovecot user, outside tmp_path.
        self.mail = Path(tempfile.mkdtemp(prefix="mailwarden-dovecot-mail-"))
        os.chmod(self.mail, 0o755)
        shutil.chown(self.mail, "dovecot", "dovecot")
        conf = d / "dovecot.conf"
        conf.write_text(f"""\
base_dir = {self.run}
protocols = imap pop3 submission
listen = {HOST}
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{self.key}
auth_mechanisms = xoauth2 oauthbearer
disable_plaintext_auth = yes
log_path = {d / "dovecot.log"}
auth_verbose = yes
mail_location = maildir:~/Maildir
first_valid_uid = 100
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={self.mail}/%Lu
}}
{"".join(passdbs)}
submission_relay_host = 127.0.0.1
submission_relay_port = {self.relay_port}
submission_relay_trusted = yes
hostname = dovecot.test
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.imap_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
}}
service imap {{
  service_count = 0
  process_min_avail = 2
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {self.pop_port}
    ssl = yes
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = {self.smtp_port}
  }}
}}
service auth {{
  client_limit = 2000
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 20
}}
protocol pop3 {{
  mail_max_userip_connections = 20
}}
""")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._wait_ready()
        return self

    def trust_client(self, azp: str) -> None:
        """Dovecot looks the key up under <prefix>/<azp or "default">/<alg>/<kid>: one directory per app."""
        target = self.keys / azp / "RS256"
        target.mkdir(parents=True, exist_ok=True)
        pem = self.signing_key_pem
        (target / self.signing_kid).write_bytes(pem if isinstance(pem, bytes) else pem.encode())
        for path in [self.keys, *self.keys.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        ctx = ssl.create_default_context(cafile=str(self.cert))
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.imap_port), timeout=2) as raw, \
                        ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                    if tls.recv(200).startswith(b"* OK"):
                        return
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not greet on {HOST}:{self.imap_port} within {timeout} s ({last})")

    def stop(self) -> None:
        for path in (getattr(self, "keys", None), getattr(self, "mail", None)):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "run", None) is not None:
            shutil.rmtree(self.run, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""
