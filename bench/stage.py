"""The stage `python -m bench` and `python -m bench.soak` both run on: the run directory, serve-style JSON logs
into its file, the sandbox in its own process, the config a user would write, the delegated refresh tokens
seeded through the sandbox's sign-in page; torn down afterwards."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import workload
from bench.sandbox_proc import SandboxProcess
from bench.seed import seed_delegated
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import logs
from mailwarden.monitor.config import Config
from mailwarden.monitor.runtime import open_runtime


@dataclass
class Stage:
    workdir: Path
    sandbox: SandboxProcess
    config: Config
    seed: dict[str, Any]


@contextlib.contextmanager
def staged(work: workload.Workload, workdir: Path | None, prefix: str, say: Callable[[str], None],
           *, edit: Callable[[Path], None] | None = None, note: str = "") -> Iterator[Stage]:
    """``edit`` may change the written config file before it is loaded; ``note`` is added to the first line."""
    workdir, tmp = workload.prepare_workdir(workdir, prefix)
    log_file = (workdir / "mailwarden.log").open("a", encoding="utf-8")  # a JSON line per check, as `serve`
    logs.setup("info", stream=log_file, json_lines=True)
    say(f"{len(work.integrations)} integrations in {work.tenants} tenants, checks {work.kinds()}{note}; "
        f"workdir {workdir}")
    sandbox = SandboxProcess(workload.write_scenario(work, workdir), workdir / "sandbox")
    try:
        path = workload.write(work, workdir, sandbox.endpoints)
        if edit is not None:
            edit(path)
        cfg = config_mod.load(path)
        redirect = cfg.web.base_url.rstrip("/") + "/auth/callback"
        if redirect != workload.REDIRECT:
            for name, app in cfg.apps.items():
                if name.endswith(("-hoth", "-b2c")):
                    sandbox.control.patch_app(app.client_id, redirect_uris=[redirect])
        t0 = time.perf_counter()
        seeding = open_runtime(cfg)
        try:
            seed = seed_delegated(seeding, work.passwords, sandbox.ca_path)
        finally:
            seeding.close()
        seed["seconds"] = round(time.perf_counter() - t0, 2)
        say(f"seeded delegated tokens: {seed}")
        yield Stage(workdir, sandbox, cfg, seed)
    finally:
        sandbox.stop()
        logging.getLogger().handlers.clear()
        log_file.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
