"""requirements.lock: the image's dependencies pinned to exact versions with hashes (deploy/lock.py writes it; the
Dockerfile installs it with --require-hashes). Reads files only: fast, no network."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
IMAGE = {"python_version": "3.11", "python_full_version": "3.11.13", "sys_platform": "linux",
         "platform_system": "Linux", "implementation_name": "cpython", "platform_python_implementation": "CPython",
         "os_name": "posix", "platform_machine": "x86_64"}


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (the pinned version, its sha256 hashes), from the lock's requirement lines (continuations joined)."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *opts = line.split()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^=<>!~;\s]+)", spec)
        assert m, f"not an exact pin: {line!r}"
        assert all(o.startswith("--hash=sha256:") and re.fullmatch(r"[0-9a-f]{64}", o[14:]) for o in opts), line
        name = canonicalize_name(m.group(1))
        assert name not in out, f"{name} pinned twice"
        out[name] = (m.group(2), [o[14:] for o in opts])
    return out


def runtime_requirements() -> list[Requirement]:
    return [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def test_lock_pins_every_runtime_dependency_exactly():
    pins = locked()
    assert pins, "requirements.lock holds no pins"
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements.lock: run python3.11 deploy/lock.py"
        version, hashes = pins[name]
        assert req.specifier.contains(Version(version), prereleases=True), \
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {req}: run python3.11 deploy/lock.py"
        assert hashes, f"{name} has no --hash: the Dockerfile installs with --require-hashes"


def test_lock_pins_what_the_extras_bring():
    """psycopg[binary] and pyjwt[crypto]: the packages an extra adds are runtime dependencies too."""
    pins = locked()
    for req in runtime_requirements():
        for extra in req.extras:
            for dep in map(Requirement, metadata.requires(req.name) or []):
                if dep.marker is not None and "extra" in str(dep.marker) and dep.marker.evaluate({**IMAGE,
                                                                                                  "extra": extra}):
                    assert canonicalize_name(dep.name) in pins, f"{dep.name} ({req.name}[{extra}]) is not locked"


def test_lock_documents_how_to_regenerate_it():
    header = "".join(line for line in LOCK.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "python3.11 deploy/lock.py" in header and "do not edit by hand" in header
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "lock.py"), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "--keep" in proc.stdout


def test_dockerfile_installs_the_lock_with_hashes_then_the_wheel_alone():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock ", text, re.M)
    run = re.search(r"^RUN python -m venv /opt/mailwarden.*?(?=^\S)", text, re.M | re.S).group(0)
    lock_step = re.search(r"pip install [^&]*--require-hashes[^&]*-r requirements\.lock", run)
    wheel_step = re.search(r"pip install [^&]*--no-deps \.", run)
    assert lock_step and wheel_step and lock_step.start() < wheel_step.start(), run
    assert "pip check" in run  # the lock is complete: nothing the wheel needs is missing
