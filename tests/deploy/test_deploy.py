"""The deployment files, checked without a Docker engine (none runs on these machines): the compose file
validates with Debian's docker-compose, and the Dockerfile's steps run outside Docker — the same wheel
install into a fresh virtualenv, bytecode compiled, `mailwarden serve` as a non-root user answering
/healthz."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]


def _exec_form(instruction: str) -> list[str]:
    """The JSON argv of a Dockerfile instruction in exec form (HEALTHCHECK ... CMD [...], ENTRYPOINT [...])."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(instruction + " "))
    return json.loads(line[line.index("["):])


def healthcheck_cmd() -> list[str]:
    return _exec_form("HEALTHCHECK")


def entrypoint() -> list[str]:
    return _exec_form("ENTRYPOINT")


def test_compose_file_validates():
    """Without a .env: the password and the token key are secret files now (tests/deploy/test_secrets.py), nothing
    comes from the environment. Debian's docker-compose (1.29) does not check that a secret's file exists; a missing
    one is refused when mailwarden starts (the entrypoint, token_key: file:), with the file named."""
    if shutil.which("docker-compose") is None:
        require_service("docker-compose", "Debian's docker-compose is not installed (apt-get install docker-compose)")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")}
    proc = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, env=bare, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "${" not in (ROOT / "docker-compose.yml").read_text()  # no value interpolated from the environment


def test_gitignore_keeps_local_secrets_and_the_demo_out():
    for path in ("mailwarden-demo/mailwarden.yaml", "mailwarden-demo/secrets/x.secret", "secrets/db_password",
                 "secrets/token_key"):
        proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path], timeout=30)
        assert proc.returncode == 0, f"{path} is not ignored by .gitignore"


def test_dockerfile_declares_non_root_and_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER mailwarden" in text
    # the health check follows web.listen and works without the web app: `mailwarden healthcheck`, no fixed port
    assert healthcheck_cmd()[:2] == ["mailwarden", "healthcheck"] and "8080" not in " ".join(healthcheck_cmd())
    assert entrypoint() == ["/bin/sh", "/usr/local/bin/mailwarden-entrypoint"]
    assert "COPY deploy/docker-entrypoint.sh /usr/local/bin/mailwarden-entrypoint" in text
    assert "compileall" in text and "python:3.11-slim" in text
    assert "deploy/strip_sandbox.py" in text  # the production image leaves the sandbox out (tested below)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("mailwarden-*.whl"))


def test_wheel_carries_templates_migrations_and_scenarios(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("mailwarden/monitor/migrations/env.py", "mailwarden/monitor/migrations/script.py.mako",
                   "mailwarden/dashboards/templates/base.html", "mailwarden/dashboards/templates/alerts/",
                   "mailwarden/dashboards/static/app.css", "mailwarden_sandbox/scenarios/demo.yaml"):
        assert any(n.startswith(needed) for n in names), needed
    assert any(n.startswith("mailwarden/monitor/migrations/versions/0001") for n in names)


def test_the_wheel_installs_two_import_names_only(wheel):
    """Issue 15: `pip install .` puts only `mailwarden` and `mailwarden_sandbox` into site-packages; nothing as
    `monitor`, `checks`, `alerts` (PyPI has packages of those names) or `sandbox`."""
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mailwarden", "mailwarden_sandbox"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def image_dir():
    """A 0755 directory outside pytest's 0700 tmp tree, so the unprivileged user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="mailwarden-image-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_image_steps_outside_docker(wheel, image_dir):
    """pip install the wheel into a fresh venv, compile bytecode, serve as an unprivileged user, /healthz."""
    tmp_path = image_dir
    venv = tmp_path / "venv"
    # The image's interpreter is system-wide; here Debian's python3.11 plays it (a root-only pyenv would not
    # be executable by the unprivileged user).
    system_python = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable
    subprocess.run([system_python, "-m", "venv", str(venv)], check=True, timeout=120)
    # the Dockerfile's install: the lock with its hashes, then the wheel alone; pip check proves the lock complete
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--require-hashes", "--no-deps", "-r",
                          str(ROOT / "requirements.lock")], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], capture_output=True,
                         text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    complete = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, timeout=60)
    assert complete.returncode == 0, complete.stdout + complete.stderr
    strip = subprocess.run([str(venv / "bin" / "python"), str(ROOT / "deploy" / "strip_sandbox.py")],
                           capture_output=True, text=True, timeout=60)  # the Dockerfile's step
    assert strip.returncode == 0 and "removed" in strip.stdout, strip.stderr
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not (site / "mailwarden_sandbox").exists() and (site / "mailwarden").is_dir()
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, timeout=60)
    assert "mailwarden_sandbox" not in check.stdout + check.stderr
    demo = subprocess.run([str(venv / "bin" / "mailwarden"), "demo", "--once"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert demo.returncode == 3 and "sandbox (mailwarden_sandbox) is not installed" in demo.stdout + demo.stderr
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv / "lib")], check=True,
                   timeout=300)
    state = tmp_path / "state"
    state.mkdir()
    port = _free_port()
    (state / "mailwarden.yaml").write_text(
        f"web: {{listen: '0.0.0.0:{port}', base_url: 'http://127.0.0.1:{port}', auth: none}}\n"
        "cloud: custom\nendpoints: {authority: 'https://127.0.0.1:9', graph: 'https://127.0.0.1:9/v1.0'}\n")
    # as the image starts it: its entrypoint, `serve`, the config named by MAILWARDEN_CONFIG (the image's ENV)
    shutil.copy(ROOT / "deploy" / "docker-entrypoint.sh", tmp_path / "mailwarden-entrypoint")
    cmd = [entrypoint()[0], str(tmp_path / "mailwarden-entrypoint"), "serve"]
    image_env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "HOME": str(state),
                 "MAILWARDEN_CONFIG": str(state / "mailwarden.yaml")}
    user = None
    if os.geteuid() == 0 and system_python != sys.executable:  # as in the image: never run as root
        user = pwd.getpwnam("nobody")
        shutil.chown(state, user.pw_uid, user.pw_gid)
    proc = subprocess.Popen(cmd, cwd=state, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            user=user.pw_uid if user else None, group=user.pw_gid if user else None, env=image_env)

    def health() -> subprocess.CompletedProcess:  # the Dockerfile's HEALTHCHECK, as Docker runs it in the container
        return subprocess.run(healthcheck_cmd(), capture_output=True, text=True, timeout=30, cwd=state, env=image_env,
                              user=user.pw_uid if user else None, group=user.pw_gid if user else None)
    try:
        deadline = time.monotonic() + 120  # a cold start imports msgraph-sdk and migrates a new database
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:  # noqa: S310
                    body = resp.read().decode()
                    assert resp.status == 200
                    break
            except OSError:
                time.sleep(0.3)
        if body is None:
            proc.terminate()
            pytest.fail(f"no /healthz answer within 120 s; stderr: {proc.communicate(timeout=15)[1][-3000:]}")
        assert "ok" in body
        healthy = health()
        assert healthy.returncode == 0 and f"127.0.0.1:{port}/healthz answered ok" in healthy.stdout, healthy.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0
    stopped = health()
    assert stopped.returncode == 1 and "unhealthy" in stopped.stderr
    created = {p.name for p in state.iterdir()}
    assert "mailwarden.db" in created and "mailwarden.key" in created
    if user:
        assert (state / "mailwarden.key").stat().st_uid == user.pw_uid
