"""`mailwarden healthcheck`, the image's HEALTHCHECK: it follows web.listen when the config runs the web app, and
looks for the `mailwarden serve` of its configuration when it does not. Real `serve` processes (SQLite, no tenant),
run from this checkout's virtualenv; tests/deploy/test_deploy.py runs the Dockerfile's HEALTHCHECK in the image's
steps too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MAILWARDEN = str(BIN / "mailwarden")
ENV = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": "/tmp"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthcheck(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MAILWARDEN, "healthcheck", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**ENV, **(env or {})})


class Serve:
    def __init__(self, workdir: Path, config: str, *args: str):
        workdir.mkdir(exist_ok=True)
        (workdir / "mailwarden.yaml").write_text(config)
        self.dir = workdir
        self.proc = subprocess.Popen([MAILWARDEN, "serve", *args], cwd=workdir, env=ENV, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def wait_until(self, ready, what: str, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.proc.poll() is None:
            if ready():
                return
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"serve: no {what} within {limit} s; stderr: {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def serves():
    started: list[Serve] = []
    yield lambda *a: started.append(Serve(*a)) or started[-1]
    for s in started:
        s.stop()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def test_healthcheck_asks_healthz_where_web_listen_says(tmp_path, serves):
    port = _free_port()  # not the image's 8080: the check reads web.listen
    web = f"web: {{listen: '0.0.0.0:{port}', base_url: 'http://127.0.0.1:{port}', auth: none}}\n"
    serve = serves(tmp_path / "web", web)
    serve.wait_until(lambda: _answers(port), "/healthz answer")
    # ./mailwarden.yaml, as serve reads it; a proxy in the environment is not asked for our own listener
    ok = healthcheck(cwd=serve.dir, env={"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    assert ok.returncode == 0, ok.stderr
    assert f"http://127.0.0.1:{port}/healthz answered ok" in ok.stdout and "leader: true" in ok.stdout
    serve.stop()
    down = healthcheck(cwd=serve.dir)
    assert down.returncode == 1 and down.stdout == ""
    assert f"unhealthy: http://127.0.0.1:{port}/healthz did not answer ok" in down.stderr


def test_healthcheck_without_the_web_app_finds_the_serve_process_of_its_config(tmp_path, serves):
    off = "web: {enabled: false}\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "mailwarden.yaml").write_text(off)
    # before anything runs: unhealthy, naming the configuration it looked for
    before = healthcheck("-c", str(other / "mailwarden.yaml"), cwd=tmp_path)
    assert before.returncode == 1 and "no running `mailwarden serve` with the configuration" in before.stderr
    serve = serves(tmp_path / "noweb", off, "-c", "mailwarden.yaml")
    config = serve.dir / "mailwarden.yaml"
    # the same file named three ways: -c relative to another directory, MAILWARDEN_CONFIG, the default ./mailwarden.yaml
    serve.wait_until(lambda: healthcheck("-c", "noweb/mailwarden.yaml", cwd=tmp_path).returncode == 0, "process")
    for how in (healthcheck(cwd=tmp_path, env={"MAILWARDEN_CONFIG": str(config)}), healthcheck(cwd=serve.dir)):
        assert how.returncode == 0, how.stderr
        assert "`mailwarden serve` runs with the configuration" in how.stdout
        assert f"pid {serve.proc.pid}" in how.stdout
    # a serve of another configuration does not count
    elsewhere = healthcheck("-c", str(other / "mailwarden.yaml"), cwd=tmp_path)
    assert elsewhere.returncode == 1, elsewhere.stdout
    serve.stop()
    gone = healthcheck("-c", str(config), cwd=tmp_path)
    assert gone.returncode == 1 and "no running `mailwarden serve`" in gone.stderr


def test_healthcheck_of_a_web_app_without_an_access_rule_looks_for_the_process(tmp_path):
    """web.enabled but no access rule: serve starts no web app, so /healthz is not asked (it would never answer)."""
    (tmp_path / "mailwarden.yaml").write_text(f"web: {{listen: '127.0.0.1:{_free_port()}'}}\n")
    proc = healthcheck(cwd=tmp_path)
    assert proc.returncode == 1 and "no running `mailwarden serve`" in proc.stderr and "/healthz" not in proc.stderr


def test_healthcheck_of_an_unreadable_config_is_unhealthy(tmp_path):
    proc = healthcheck("-c", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert proc.returncode == 1 and "the configuration file does not exist" in proc.stderr


def test_process_lookup_reads_argv_as_the_kernel_gives_it():
    from mailwarden.monitor.health import _mailwarden_args

    assert _mailwarden_args(["/opt/mailwarden/bin/python", "/opt/mailwarden/bin/mailwarden", "serve"]) == ["serve"]
    assert _mailwarden_args(["python", "-m", "mailwarden.monitor", "serve", "-c", "x"]) == ["serve", "-c", "x"]
    assert _mailwarden_args(["/bin/sh", "/usr/local/bin/mailwarden-entrypoint", "serve"]) is None
    assert _mailwarden_args(["python", "-c", "print('mailwarden serve')"]) is None
    assert os.path.basename(MAILWARDEN) == "mailwarden"
