"""Hostile configuration (hardening issue, item 11, the configuration's part). A YAML alias bomb ended in a
MemoryError after eating gigabytes, a recursive alias or deep nesting in a RecursionError traceback; a secret
reference to /dev/zero ate memory, one to a FIFO hung ``validate --resolve`` for good, a non-UTF-8 secret file was a
UnicodeDecodeError traceback; ``validate`` accepted an interval of 10^11 days and ports past 65535 that ``serve`` then
crashed on. Each is now a ConfigError or SecretReferenceError naming the key or reference and the line, at once,
from the loader and from the CLI (exit 1 for ``validate``), never a traceback and never the secret's content.

The CLI cases run ``mailwarden`` in a child process capped at 1.5 GB of address space and 60 s, so that the code
before the fix fails them (a MemoryError, a traceback, a timeout) instead of taking the test run down with it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailwarden.errors import ConfigError, SecretReferenceError
from mailwarden.monitor import config as config_mod

BASE = """\
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555}
apps:
  helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: "SECRET"}
integrations:
  - {name: helpdesk-support, app: helpdesk, flow: app, mailbox: support@contoso.com}
"""
CLI = [sys.executable, "-c", "from mailwarden.monitor.cli import main; main()"]


def write(tmp_path: Path, text: str, secret: str = "env:MW_HOSTILE_SECRET") -> Path:
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent(text).replace("SECRET", secret))
    return path


def _limits() -> None:  # in the child: a runaway allocation fails there, not on this machine
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 1024 * 1024, 1536 * 1024 * 1024))


def cli(*args: str, timeout: float = 60) -> tuple[int | None, str]:
    try:
        done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, preexec_fn=_limits,
                              env={**os.environ, "MW_HOSTILE_SECRET": "x" * 12})
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    return done.returncode, done.stdout + done.stderr


def refused(path: Path) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert time.monotonic() - started < 5
    message = info.value.message()
    assert str(path) in message and "Traceback" not in message
    return message


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(10))


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """Nine aliases of nine aliases, ten levels: 3.5 billion values once expanded (the YAML "billion laughs"). An
    anchor used a few times, as people do to repeat a list, still loads."""
    started = time.monotonic()
    code, out = cli("validate", "-c", str(write(tmp_path, BOMB)))
    assert code == 1 and "Traceback" not in out and "MemoryError" not in out, (code, out[-2000:])
    assert "refused YAML" in out and "aliases" in out and "line 1" in out, out
    assert time.monotonic() - started < 30
    doc = BASE.replace("flow: app, mailbox: support@contoso.com}",
                       "flow: app, mailbox: support@contoso.com, tags: &tags [helpdesk, eu]}")
    doc += "  - {name: helpdesk-sales, app: helpdesk, flow: app, mailbox: sales@contoso.com, tags: *tags}\n"
    cfg = config_mod.load(write(tmp_path, doc))
    assert cfg.integration("helpdesk-sales").tags == ["helpdesk", "eu"]


def test_a_wide_alias_expansion_is_refused(tmp_path):
    """Few aliases, each of a large list: 300,000 values out of a two-line file (a million would take a gigabyte)."""
    items = ", ".join(str(i) for i in range(1000))
    doc = f"big: &big [{items}]\nall: [{', '.join(['*big'] * 300)}]\n"
    message = refused(write(tmp_path, doc))
    assert "values once its aliases are expanded" in message


def test_a_recursive_alias_is_refused(tmp_path):
    """``&a [*a]`` composes to a list that holds itself: converting it recursed until RecursionError."""
    message = refused(write(tmp_path, BASE + "tags: &loop [x, *loop]\n"))
    assert "recursive alias" in message and "line 7" in message


def test_deep_nesting_is_refused(tmp_path):
    """990 nested lists: under libyaml's own limit, past Python's recursion limit."""
    message = refused(write(tmp_path, "a: " + "[" * 990 + "]" * 990 + "\n"))
    assert "nested more than" in message


def test_a_complex_key_is_refused(tmp_path):
    """``? [a]`` makes a list the key of a mapping: a TypeError (unhashable) traceback."""
    message = refused(write(tmp_path, "? [a, b]\n: 1\n"))
    assert "a key must be a plain value" in message



@pytest.mark.parametrize(("target", "expected"), [
    ("/dev/zero", "is a character device, not a regular file"),
    ("FIFO", "is a FIFO (named pipe), not a regular file"),
    ("DIR", "is a directory, not a regular file"),
    ("BIG", "is larger than 64 KiB"),
    ("LATIN1", "is not UTF-8 text (at byte 4)"),
    ("BINARY", "holds control characters"),
])
def test_a_secret_reference_to_anything_but_a_small_text_file_is_a_clear_error(tmp_path, target, expected):
    """/dev/zero was read until memory ran out, a FIFO blocked forever, a directory or a Latin-1 file was a traceback,
    a file of a gigabyte was read whole; the error names the key and the reference, never the content."""
    paths = {"FIFO": tmp_path / "fifo", "DIR": tmp_path / "dir", "BIG": tmp_path / "big", "LATIN1": tmp_path / "latin1",
             "BINARY": tmp_path / "binary"}
    os.mkfifo(paths["FIFO"])
    paths["DIR"].mkdir()
    paths["BIG"].write_bytes(b"k" * (64 * 1024 + 1))
    paths["LATIN1"].write_bytes("geh\xe9im-secret".encode("latin-1"))
    paths["BINARY"].write_bytes(b"secret\x00\x01value")
    path = str(paths.get(target, target))
    code, out = cli("validate", "--resolve", "-c", str(write(tmp_path, BASE, secret=f"file:{path}")), timeout=20)
    assert code == 1, (code, out[-2000:])
    assert f"apps.helpdesk.secret: file {path} {expected}" in out, out
    assert "Traceback" not in out and "geh" not in out and "secret\\x00" not in out
    with pytest.raises(SecretReferenceError, match="apps.helpdesk.secret: file "):
        config_mod.resolve_ref(f"file:{path}", tmp_path, what="apps.helpdesk.secret")


def test_a_utf8_secret_file_with_a_byte_order_mark_is_read_without_it(tmp_path):
    """A secret saved by an editor that writes a BOM was sent with it, and refused by Entra ID as wrong."""
    (tmp_path / "s.txt").write_bytes("\ufeffZq8~value\n".encode())
    assert config_mod.resolve_ref("file:s.txt", tmp_path, what="x") == "Zq8~value"


def test_a_configuration_file_that_is_a_device_or_a_fifo_is_a_clear_error(tmp_path):
    """``validate -c /dev/zero`` read until memory ran out; ``-c`` a FIFO hung."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, expected in (("/dev/zero", "is a character device"), (str(fifo), "is a FIFO (named pipe)")):
        code, out = cli("validate", "-c", path, timeout=20)
        assert code == 1 and f"the configuration file {expected}" in out and "Traceback" not in out, (code, out)


@pytest.mark.parametrize(("setting", "key", "expected"), [
    ("defaults: {interval: 100000000000d}", "defaults.interval", "must be between 1s and 31d"),
    ("defaults: {timeout: 1.0e+400}", "defaults.timeout", "must be between 10ms and 1h"),
    ("defaults: {interval: 1" + "0" * 400 + "}", "defaults.interval", "is far too large"),
    ("defaults: {replication_grace: .nan}", "defaults.replication_grace", "must be between 1ms and 1d"),
    ("web: {session_max_age: 100000000000d}", "web.session_max_age", "must be between 1s and 366d"),
    ("web: {reauth_link_ttl: .inf}", "web.reauth_link_ttl", "must be between 1s and 366d"),
    ("alerts: {reminder_interval: 99999999999h}", "alerts.reminder_interval", "must be between 1s and 366d"),
    ("alerts: {flapping: {window: 100000000000d}}", "alerts.flapping.window", "must be between 1s and 31d"),
    ("defaults: {expiry_warning_days: 100000000000}", "defaults.expiry_warning_days", "must be at most 3650"),
    ("web: {retention: {failures_days: 100000000000}}", "web.retention.failures_days", "must be at most 3650"),
    ('web: {base_url: "https://mw.contoso.com:999999"}', "web.base_url", "port must be a number from 1 to 65535"),
    ('alerts: {heartbeat_url: "https://hc.example.com:0/ping"}', "alerts.heartbeat_url", "from 1 to 65535"),
    ('database: "postgresql://mw:hunter2@db.contoso.com:999999/mw"', "database", "port must be a number from 1"),
    ('cloud: custom\nendpoints: {authority: "https://login.contoso.com:70000", graph: "https://graph.contoso.com"}',
     "endpoints.authority", "port must be a number from 1 to 65535"),
    ('cloud: custom\nendpoints: {authority: "https://l.contoso.com", graph: "https://g.contoso.com", '
     'imap: "imap.contoso.com:999999"}', "endpoints.imap", "the port from 1 to 65535"),
    ('cloud: custom\nendpoints: {authority: "https://l.contoso.com", graph: "https://g.contoso.com", '
     'smtp: "smtp.contoso.com:submission"}', "endpoints.smtp", "the port from 1 to 65535"),
])
def test_validate_refuses_what_serve_cannot_run(tmp_path, setting, key, expected):
    """``validate`` said valid; ``serve`` then died in the scheduler (timedelta overflow), a socket or a URL parser."""
    path = write(tmp_path, BASE + setting + "\n")
    message = refused(path)
    assert any(line.strip().startswith(f"- {key} (line ") and expected in line for line in message.splitlines()), \
        message
    assert "hunter2" not in message  # a database URL (its password) is not echoed
    code, out = cli("validate", "-c", str(path), timeout=60)
    assert code == 1 and expected in out and "Traceback" not in out, (code, out)
