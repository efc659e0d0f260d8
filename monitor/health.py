"""`mailwarden healthcheck`: is the `mailwarden serve` of this configuration alive? The image's HEALTHCHECK runs it.

With the web app (``web.enabled`` and an access rule), it asks ``/healthz`` where ``web.listen`` says (a wildcard
address is asked on loopback): the answer comes from the serve process's own event loop. Without the web app there is
nothing to ask, so it looks for the process itself: a live (not zombie, not stopped) ``mailwarden serve`` whose
configuration file is this one, found in /proc (Linux). Nothing here resolves a secret or opens the database.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import ConfigOpt, app, load_config

HEALTHY, UNHEALTHY = 0, 1  # what Docker's HEALTHCHECK reads (2 is reserved there)
WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104 - where to ask a wildcard listener


def probe_web(listen_host: str, port: int, timeout: float) -> tuple[bool, str]:
    host = WILDCARD.get(listen_host, listen_host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy of the environment
    try:
        with direct.open(url, timeout=timeout) as resp:
            body = json.loads(resp.read(4096) or b"{}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return False, f"{url} did not answer ok ({reason})"
    if not isinstance(body, dict) or body.get("status") != "ok":
        return False, f"{url} answered, but not status ok"
    extra = "".join(f", {k}: {json.dumps(body[k])}" for k in ("leader", "buffered") if k in body)
    return True, f"{url} answered ok{extra}"


def _argv(pid: str) -> list[str]:
    return [os.fsdecode(a) for a in Path("/proc", pid, "cmdline").read_bytes().split(b"\0") if a]


def _mailwarden_args(argv: list[str]) -> list[str] | None:
    """The arguments after the program when ``argv`` runs mailwarden (the console script, or ``-m``), else None."""
    for i, arg in enumerate(argv[:3]):
        if os.path.basename(arg) == "mailwarden":
            return argv[i + 1:]
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] in ("mailwarden.monitor", "mailwarden.monitor.cli"):
            return argv[i + 2:]
    return None


def _config_of(pid: str, args: list[str]) -> Path | None:
    """The configuration file a `mailwarden serve` process reads, as `config_path` resolves it in that process."""
    explicit = None
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            explicit = args[i + 1]
        elif arg.startswith("--config="):
            explicit = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2:
            explicit = arg[2:]
    if explicit is None:
        env = Path("/proc", pid, "environ").read_bytes().split(b"\0")
        named = [e.split(b"=", 1)[1] for e in env if e.startswith(b"MAILWARDEN_CONFIG=")]
        explicit = os.fsdecode(named[-1]) if named and named[-1] else config_mod.DEFAULT_CONFIG
    return Path(os.readlink(f"/proc/{pid}/cwd"), explicit)


def serve_processes(config_file: Path) -> list[int]:
    """The live `mailwarden serve` processes whose configuration file is ``config_file`` (Linux /proc)."""
    target = os.path.realpath(config_file)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = _mailwarden_args(_argv(entry.name))
            words = [a for a in args or [] if not a.startswith("-")]
            if not words or words[0] != "serve":
                continue
            state = Path("/proc", entry.name, "stat").read_text().rpartition(")")[2].split()[0]
            config = _config_of(entry.name, args or [])
        except (OSError, IndexError):  # gone meanwhile, or another user's process
            continue
        if state not in ("Z", "X", "T", "t") and config is not None and os.path.realpath(config) == target:
            found.append(int(entry.name))
    return found


def probe_process(config_file: Path) -> tuple[bool, str]:
    if not Path("/proc/self").exists():
        return False, "no /proc here: without the web app the check looks for the process in /proc (Linux)"
    pids = serve_processes(config_file)
    if not pids:
        return False, f"no running `mailwarden serve` with the configuration {config_file} (the web app is off)"
    return True, f"`mailwarden serve` runs with the configuration {config_file} (pid {', '.join(map(str, pids))})"


@app.command()
def healthcheck(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /healthz.", min=0.1, max=60)] = 4.0,
) -> None:
    """Is the `mailwarden serve` of this configuration alive? With the web app: /healthz on web.listen answers ok.
    Without it: a live `mailwarden serve` process with this configuration file runs here (/proc). The image's
    HEALTHCHECK runs this. One line says what was found. Exit 0 healthy, 1 not (also when the configuration
    cannot be read), 3 on a usage error."""
    cfg = load_config(config, UNHEALTHY)
    path = config_mod.config_path(config)
    host, port = cfg.web.host_port()
    if cfg.web.enabled and cfg.web.auth_mode() is not None and port:
        ok, why = probe_web(host, port, timeout)
    else:
        ok, why = probe_process(path.absolute())
    typer.echo(f"{'healthy' if ok else 'unhealthy'}: {why}", err=not ok)
    raise typer.Exit(HEALTHY if ok else UNHEALTHY)
