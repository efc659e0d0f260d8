"""The database password and the token key as files (compose secrets), never environment values: the compose file
mounts them; the image's entrypoint (deploy/docker-entrypoint.sh) hands the password file to libpq; the config
reads the token key with `token_key: file:`. Outside Docker, fast: a stand-in PostgreSQL server records the password
libpq sends (it asks for it in clear text, then refuses the login)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
BIN = Path(sys.executable).parent
PASSWORD = "pw-Zq8!x y$HOME"  # shell-sensitive characters: read as data, never expanded
TOKEN_KEY = "hT3d2mVqz0bW7mJ8cC4tq8J3kQpN5yZy0r3uU1x9s1M="


def compose_config() -> dict:
    if shutil.which("docker-compose") is None:
        require_service("docker-compose", "Debian's docker-compose is not installed (apt-get install docker-compose)")
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("MAILWARDEN_", "PG", "POSTGRES"))}
    proc = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                          text=True, env=bare, timeout=60)
    assert proc.returncode == 0, proc.stderr  # no .env, no password or key in the environment: nothing to ask for
    return yaml.safe_load(proc.stdout)


def test_compose_passes_the_password_and_the_token_key_as_secret_files():
    doc = compose_config()
    assert doc["secrets"] == {"db_password": {"file": str(ROOT / "secrets" / "db_password")},
                              "token_key": {"file": str(ROOT / "secrets" / "token_key")}}
    db, mw = doc["services"]["db"], doc["services"]["mailwarden"]
    assert [s["source"] for s in db["secrets"]] == ["db_password"]  # PostgreSQL never sees the token key
    assert sorted(s["source"] for s in mw["secrets"]) == ["db_password", "token_key"]
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert mw["environment"]["PGPASSWORD_FILE"] == "/run/secrets/db_password"
    for service in (db, mw):  # no secret value passes through the environment (or `docker inspect`)
        for key in service.get("environment", {}):
            assert key.endswith("_FILE") or not any(w in key for w in ("PASSWORD", "TOKEN_KEY", "SECRET")), key
    # the client secrets stay a separate read-only mount: the db secrets are not duplicated into it
    assert f"{ROOT / 'secrets' / 'apps'}:/run/secrets/mailwarden:ro" in mw["volumes"]


def test_compose_worker_runs_the_queue_with_the_same_config_and_secrets():
    """Queue mode's `worker` service (`--profile queue`, `--scale worker=N`): `mailwarden worker` with the serve
    service's config, secrets and mounts, so a worker reads the same database and token store."""
    doc = compose_config()
    mw, worker = doc["services"]["mailwarden"], doc["services"]["worker"]
    assert worker["command"] == ["worker"] and worker["profiles"] == ["queue"]
    assert worker["environment"] == mw["environment"]
    assert sorted(s["source"] for s in worker["secrets"]) == ["db_password", "token_key"]
    assert sorted(worker["volumes"]) == sorted(mw["volumes"])
    assert "ports" not in worker  # nothing listens in a worker


def test_compose_comments_name_the_references_the_config_needs():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "token_key: file:/run/secrets/token_key" in text
    assert "database: postgresql+psycopg://mailwarden@db/mailwarden" in text


class FakePostgres:
    """Enough of the PostgreSQL protocol for libpq to send its password: refuse SSL/GSS, ask for a clear-text
    password, record it, refuse the login (28P01)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.passwords: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except (OSError, struct.error):
                    pass

    @staticmethod
    def _read(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _one(self, conn):
        while True:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                conn.sendall(b"N")
                continue
            self._read(conn, length - 8)  # the startup message's parameters
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        body = self._read(conn, length - 4)
        if kind == b"p":
            self.passwords.append(body.rstrip(b"\0").decode())
        fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"mailwarden\"\0\0"
        conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    def close(self):
        self.sock.close()


@pytest.fixture
def fake_pg():
    server = FakePostgres()
    yield server
    server.close()


def entrypoint(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), **env})


def test_entrypoint_gives_libpq_the_password_from_the_secret_file(tmp_path, fake_pg):
    secret = tmp_path / "db_password"
    secret.write_text(PASSWORD + "\n")  # as an editor saves it: the newline is not part of it (as postgres reads it)
    (tmp_path / "mailwarden.yaml").write_text(
        f"database: postgresql+psycopg://mailwarden@127.0.0.1:{fake_pg.port}/mailwarden\n")
    proc = entrypoint("db", "upgrade", env={"PGPASSWORD_FILE": str(secret)}, cwd=tmp_path)
    assert fake_pg.passwords and set(fake_pg.passwords) == {PASSWORD}
    assert proc.returncode == 3 and "password authentication failed" in proc.stderr  # mailwarden ran, libpq asked
    assert PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "both"])
def test_entrypoint_refuses_an_unusable_password_file_in_one_line(tmp_path, case):
    secret = tmp_path / "db_password"
    env = {"PGPASSWORD_FILE": str(secret)}
    if case == "empty":
        secret.write_text("\n")
    elif case == "directory":  # what Docker mounts when the secret's file does not exist on the host
        secret.mkdir()
    elif case == "both":
        secret.write_text(PASSWORD)
        env["PGPASSWORD"] = PASSWORD
    proc = entrypoint("serve", env=env, cwd=tmp_path)
    assert proc.returncode == 3 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailwarden: ") and "PGPASSWORD_FILE" in lines[0]
    assert PASSWORD not in proc.stderr
    if case != "both":
        assert str(secret) in lines[0]


def test_the_compose_setup_outside_docker(tmp_path, fake_pg):
    """The config the compose file documents, with the secrets where compose mounts them (here under tmp_path) and
    the mailwarden service's environment: the token key resolves from its file, libpq gets the password from its
    file, a missing token key file is named; no secret value in any output."""
    doc = compose_config()
    run = tmp_path / "run" / "secrets"
    run.mkdir(parents=True)
    for name in doc["services"]["mailwarden"]["secrets"]:  # compose mounts secrets.NAME.file at /run/secrets/NAME
        (run / name["source"]).write_text({"db_password": PASSWORD, "token_key": TOKEN_KEY}[name["source"]] + "\n")
    documented = [line.lstrip("# ").split("#")[0].strip() for line in (ROOT / "docker-compose.yml").read_text()
                  .splitlines() if line.startswith("#") and line.lstrip("# ").startswith(("database:", "token_key:"))]
    assert len(documented) == 2, documented
    config = tmp_path / "mailwarden.yaml"
    config.write_text("\n".join(documented).replace("@db/", f"@127.0.0.1:{fake_pg.port}/")
                      .replace("/run/secrets/", f"{run}/") + "\n")
    env = {k: v.replace("/run/secrets/", f"{run}/") for k, v in doc["services"]["mailwarden"]["environment"].items()}
    env["MAILWARDEN_CONFIG"] = str(config)
    outputs = []
    resolved = entrypoint("validate", "--resolve", env=env, cwd=tmp_path)
    outputs.append(resolved.stdout + resolved.stderr)
    assert resolved.returncode == 0 and "all references resolve" in resolved.stdout, resolved.stderr
    upgrade = entrypoint("db", "upgrade", env=env, cwd=tmp_path)
    outputs.append(upgrade.stdout + upgrade.stderr)
    assert fake_pg.passwords and set(fake_pg.passwords) == {PASSWORD}, upgrade.stderr
    (run / "token_key").unlink()
    missing = entrypoint("validate", "--resolve", env=env, cwd=tmp_path)
    outputs.append(missing.stdout + missing.stderr)
    assert missing.returncode == 1 and f"token_key: file {run / 'token_key'} cannot be read" in missing.stderr
    assert not any(PASSWORD in out or TOKEN_KEY in out for out in outputs)
