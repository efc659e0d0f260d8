"""SIGHUP rebuilds the web app's settings with the rest of the config, or refuses the whole reload loudly.

Attacks item 7 of the hardening issue: after a password change by reload, the old password kept working and the
new one was refused (every ``web.*`` setting was kept from the start). A running `mailwarden serve` process is
reloaded here as an admin would reload it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from mailwarden.monitor.web.auth import hash_password

MAILWARDEN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mailwarden"
OLD, NEW = "old-Passw0rd-for-reload", "new-Passw0rd-for-reload"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, *, password: str, port: int, allowed: list[str] | None = None) -> None:
    path.write_text(textwrap.dedent(f"""\
        database: sqlite:///serve.db
        cloud: custom
        endpoints: {{authority: "https://127.0.0.1:9", graph: "https://127.0.0.1:9/v1.0"}}
        defaults: {{interval: 1h, timeout: 2s}}
        tenants: {{t: {{tenant_id: 11111111-2222-3333-4444-555555555555}}}}
        apps: {{a: {{tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_RELOAD_SECRET}}}}
        web:
          listen: 127.0.0.1:{port}
          base_url: http://127.0.0.1:{port}
          password_hash: "{hash_password(password, n=2**12)}"
          allowed_hosts: {json.dumps(allowed or [])}
        integrations:
          - {{name: keep, app: a, flow: app, mailbox: keep@contoso.com, checks: [token]}}
        """))


def status(port: int, password: str, host: str | None = None) -> int:
    headers = {"Host": host} if host else {}
    return httpx.get(f"http://127.0.0.1:{port}/api/integrations", auth=("admin", password), headers=headers,
                     timeout=10).status_code


def wait_until(pred, what: str, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"serve exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def messages(log: Path) -> list[dict]:
    text = log.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


@pytest.fixture
def serving(tmp_path):
    cfg, log, port = tmp_path / "mailwarden.yaml", tmp_path / "stderr.log", free_port()
    write_config(cfg, password=OLD, port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")} | {"MW_RELOAD_SECRET": "x-s"}
    with log.open("w") as err:
        proc = subprocess.Popen([str(MAILWARDEN), "serve", "-c", str(cfg)], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def up() -> bool:
        try:
            return status(port, OLD) == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, "the web app", proc, log, timeout=60.0)  # a start-up: imports and migrations, on a busy machine
        yield cfg, log, port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def hup_and_wait(proc, log: Path, msg: str) -> dict:
    before = len(messages(log))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any(m["msg"] == msg for m in messages(log)[before:]), msg, proc, log)
    return next(m for m in messages(log)[before:] if m["msg"] == msg)


def test_a_password_changed_by_reload_takes_effect_at_once(serving):
    """The issue's case: the old password must stop working and the new one must work, without a restart; the
    allowed hosts are rebuilt too."""
    cfg, log, port, proc = serving
    assert status(port, NEW) == 401 and status(port, OLD, host="mw.contoso.example") == 400
    write_config(cfg, password=NEW, port=port, allowed=["mw.contoso.example"])
    hup_and_wait(proc, log, "web app rebuilt from the reloaded config")
    assert status(port, OLD) == 401
    assert status(port, NEW) == 200
    assert status(port, NEW, host="mw.contoso.example") == 200


def test_a_web_setting_a_running_process_cannot_change_refuses_the_whole_reload(serving):
    """web.listen is bound at start: a reload changing it (with a new password) must not half-apply (new password,
    old socket): it is refused with an error naming the key, and the old config keeps running."""
    cfg, log, port, proc = serving
    write_config(cfg, password=NEW, port=free_port())
    refused = hup_and_wait(proc, log, "config reload refused; keeping the running config")
    assert refused["level"] == "error" and "web.listen" in refused["error"] and "restart" in refused["error"]
    assert status(port, OLD) == 200 and status(port, NEW) == 401
    assert not any(m["msg"] == "config reloaded" for m in messages(log))


def test_an_unresolvable_password_reference_refuses_the_reload(serving):
    """A password_hash reference that cannot be read must not leave a web app without its password (or the
    scheduler on a new config and the web app on the old): the reload is refused whole."""
    cfg, log, port, proc = serving
    cfg.write_text(cfg.read_text().replace(cfg.read_text().split("password_hash: ")[1].split("\n")[0],
                                           "env:MW_RELOAD_NO_SUCH_VARIABLE"))
    refused = hup_and_wait(proc, log, "config reload refused; keeping the running config")
    assert "MW_RELOAD_NO_SUCH_VARIABLE" in refused["error"]
    assert status(port, OLD) == 200
