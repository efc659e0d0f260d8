"""`mailwarden serve`, `demo` and `sandbox`: the long-running commands."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailwarden.errors import MailwardenError
from mailwarden.monitor import freeze_heap, freeze_later, preload_checks, refreeze_heap
from mailwarden.monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, exit_code, fail, load_config


async def _serve_forever(monitor, *, reload_on_hup: bool = True, web=None, worker: int | None = None) -> None:
    """Until SIGINT/SIGTERM: the scheduler, the web app when on, and in queue mode a worker of ``worker`` checks at
    once sharing the scheduler's runtime (None: none in this process)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if reload_on_hup:
        loop.add_signal_handler(signal.SIGHUP, reload, monitor, web)
    monitor.start()
    # the scheduler's jobs, one per check with its trigger (3,400 jobs: about 20,000 objects), live as long as the
    # process: frozen with the rest, not walked by every full collection until the warm freeze (bench/)
    freeze_heap()
    warming = loop.create_task(freeze_later(warm_after(monitor.runtime.config)))
    working = None
    try:
        if worker is not None:
            from mailwarden.monitor.worker import WorkerService

            working = loop.create_task(WorkerService(lambda: monitor.runtime, concurrency=worker).run(stop))
        if web is not None:  # monitor.web.server.WebServer: uvicorn as a task in this loop
            await web.start()
        await stop.wait()
    finally:
        if web is not None:
            await web.stop()
        if working is not None:  # its running checks finish first (up to a check's timeout)
            await working
        await monitor.drain()  # the scheduler's jobs under way end rather than being cancelled mid-way
        await monitor.close_queue()
        monitor.shutdown()
        warming.cancel()


def reload(monitor, web) -> bool:
    """SIGHUP: the new config replaces the running one whole, the web app's settings included (password, access
    rule, hosts, proxies, sessions), or not at all: a config that cannot load, or a web setting a running process
    cannot change (web.listen, web.enabled, turning the web app on or off), is refused with an error in the log and
    the old config keeps running."""
    import logging

    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.web import server

    log = logging.getLogger("mailwarden.scheduler")
    try:
        new = config_mod.load(config_mod.config_path(monitor.config_path))
    except MailwardenError as exc:
        log.error("config reload failed; keeping the running config", extra={"error": exc.message()})
        return False
    problem = server.reload_problem(monitor.runtime.config, new)
    if problem is not None:
        log.error("config reload refused; keeping the running config", extra={"error": problem})
        return False
    if not monitor.reload():
        return False
    if web is not None:
        web.rebuild()
        log.info("web app rebuilt from the reloaded config")
    refreeze_after_reload(monitor.runtime.config)
    return True


def _longest(cfg, setting: str) -> float:
    """The longest ``interval`` or ``timeout`` of any integration (the default when there is none), and a minute."""
    return cfg.longest(setting) + 60.0


def warm_after(cfg) -> float:
    """Seconds until every check has run once (``freeze_later``): the longest interval, and a minute for the
    first runs, which the scheduler spreads over it."""
    return _longest(cfg, "interval")


_refreezing: set[asyncio.Task] = set()


def refreeze_after_reload(cfg) -> None:
    """The old runtime is closed: what of it was frozen may be collected once the checks under way with it have
    ended (the longest check timeout, and a minute). A reload without a running loop has no check under way."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        refreeze_heap()
        return
    task = loop.create_task(freeze_later(_longest(cfg, "timeout"), thaw=True))
    _refreezing.add(task)
    task.add_done_callback(_refreezing.discard)


def _web_for(monitor):
    """The web app's server for `monitor` (socket bound), None when off; exit 3 when it cannot start."""
    from mailwarden.monitor.web import server

    try:
        return server.prepare(monitor)
    except MailwardenError as exc:
        monitor.runtime.close()
        raise fail(exc, EXIT_UNKNOWN) from None


Concurrency = Annotated[int | None, typer.Option(
    "--concurrency", min=1, max=1000, help="Checks this process runs at once (default: concurrency.total).")]


@app.command()
def serve(config: ConfigOpt = None,
          worker: Annotated[bool, typer.Option(
              "--worker/--no-worker", help="Queue mode: also run checks from the queue in this process.")] = True,
          concurrency: Concurrency = None) -> None:
    """Run the scheduler: every check of every integration at its interval, results stored; and the status
    web app on web.listen (127.0.0.1:8080 by default) once an access rule is configured (see README "Web").
    In queue mode (execution.mode: queue) the leader puts due checks on the queue and, unless --no-worker, this
    process also runs checks from it as `mailwarden worker` does.

    SIGHUP reloads the config (removed integrations stop being checked); SIGTERM/SIGINT stop.
    Logs are JSON lines when stderr is not a terminal. Exit 0 on a clean stop, 3 when the config or
    database is unusable at start, or on a usage error.
    """
    from mailwarden.monitor import logs, tune_malloc
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.scheduler import Monitor
    from mailwarden.monitor.scheduler import preload as preload_jobs

    tune_malloc()  # before any thread allocates (README "Memory")
    cfg = load_config(config, EXIT_UNKNOWN)
    logs.setup(cfg.log_level)
    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    monitor = Monitor(runtime, config)
    in_process = (concurrency or cfg.concurrency.total) if worker and cfg.execution.mode == "queue" else None
    preload_checks(cfg)
    preload_jobs()
    freeze_heap()
    asyncio.run(_serve_forever(monitor, web=_web_for(monitor), worker=in_process))


@app.command("worker")
def worker_command(config: ConfigOpt = None, concurrency: Concurrency = None,
                   listen: Annotated[str | None, typer.Option(
                       "--listen", metavar="HOST:PORT",
                       help="Serve this worker's /healthz and /metrics there (e.g. 127.0.0.1:8788).")] = None) -> None:
    """Queue mode: run checks from the job queue in PostgreSQL (execution.mode: queue), as many processes and
    machines as needed; the leader (`mailwarden serve`) puts due checks on it. Results go through the same
    pipeline as `serve`'s: stored, with their incidents and alerts raised by the leader.

    SIGHUP reloads the config; SIGTERM/SIGINT stop after the running checks end. Exit 0 on a clean stop, 3 when the
    config or database is unusable at start (or the config is not in queue mode, or --listen cannot be bound), or on
    a usage error.
    """
    from mailwarden.monitor import logs, tune_malloc
    from mailwarden.monitor.runtime import open_runtime

    tune_malloc()
    cfg = load_config(config, EXIT_UNKNOWN)
    logs.setup(cfg.log_level)
    if cfg.execution.mode != "queue":
        raise fail("`mailwarden worker` takes checks from the job queue: set execution.mode: queue (PostgreSQL) in "
                   "the config; in local mode `mailwarden serve` runs every check itself", EXIT_UNKNOWN)
    sock = _bind(listen) if listen else None
    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    preload_checks(cfg)
    freeze_heap()
    asyncio.run(_work_forever(runtime, config, concurrency or cfg.concurrency.total, sock))


def _bind(listen: str):
    """The worker's health socket, bound before anything starts: a bad or busy address is exit 3 at once."""
    import socket

    host, _, port = listen.rpartition(":")
    try:
        return socket.create_server((host.strip("[]") or "127.0.0.1", int(port)))
    except (ValueError, OSError) as exc:
        raise fail(f"--listen {listen}: cannot listen there ({exc})", EXIT_UNKNOWN) from None


async def _work_forever(runtime, config_path: Path | None, concurrency: int, sock=None) -> None:
    import logging

    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden.monitor.worker import WorkerService

    log = logging.getLogger("mailwarden.worker")
    held = [runtime]

    def load():
        cfg = config_mod.load(config_mod.config_path(config_path))
        if cfg.execution != held[0].config.execution:
            raise MailwardenError("execution (queue mode, the queue's limits) changes at a restart, not a reload")
        return open_runtime(cfg)

    async def reload() -> None:  # a config that cannot load, or changes execution, keeps the running one
        try:  # in a thread: the migrations' check and the connect would hold the loop (heartbeats, slots)
            new = await asyncio.to_thread(load)
        except MailwardenError as exc:
            log.error("config reload failed; keeping the running config", extra={"error": exc.message()})
            return
        old, held[0] = held[0], new
        old.close()
        refreeze_after_reload(new.config)
        log.info("config reloaded", extra={"integrations": len(new.config.integrations)})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    log.info("worker started", extra={"concurrency": concurrency})
    service = WorkerService(lambda: held[0], concurrency=concurrency)
    warming = loop.create_task(freeze_later(warm_after(runtime.config)))
    server = None
    if sock is not None:
        import contextlib

        import uvicorn

        from mailwarden.monitor.worker import health_app

        class Server(uvicorn.Server):
            def capture_signals(self):  # this loop handles the signals
                return contextlib.nullcontext()

        server = Server(uvicorn.Config(health_app(service), log_config=None, access_log=False, lifespan="off",
                                       server_header=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await service.run(stop)
    finally:
        warming.cancel()
        if server is not None:
            server.should_exit = True
            await serving
        held[0].close()


@app.command()
def sandbox(
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML (default: the demo scenario).")] = None,
    port: Annotated[int, typer.Option(help="HTTPS port (0: any free port).", min=0, max=65535)] = 8443,
    workdir: Annotated[Path, typer.Option(help="Where the CA, certificates and keys are written.")]
    = Path("mailwarden-sandbox"),
) -> None:
    """Run the local Entra ID / Graph stand-in alone; prints its endpoints and CA path. Ctrl-C stops it.

    Exit 0 when stopped, 3 on a usage error.
    """
    from mailwarden.monitor import demo

    try:
        path = scenario or demo.demo_scenario()
    except MailwardenError as exc:
        raise fail(exc, 3) from None
    from mailwarden_sandbox import Sandbox

    sb = Sandbox(path, workdir=workdir, port=port)
    sb.start()
    typer.echo(f"sandbox listening on {sb.base_url}\nCA certificate: {sb.ca_path}")
    for key, value in sb.endpoints.items():
        typer.echo(f"  {key}: {value}")
    typer.echo(f"control API: {sb.base_url}/_sandbox/state")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle, print the results and exit.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json (with --once).")] = "table",
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its config, database and keys.")]
    = Path("mailwarden-demo"),
    interval: Annotated[int, typer.Option(help="Check interval in seconds.", min=1)] = 60,
    port: Annotated[int, typer.Option(help="Port of the dashboard on 127.0.0.1 (0: any free port).", min=0,
                                      max=65535)] = 8080,
) -> None:
    """Start the sandbox with a scenario modelled on five real consuming systems, write a config for it,
    and monitor it on SQLite with the dashboard on 127.0.0.1 (its URL and a generated admin password are
    printed). With --once: one cycle, results printed, exit code as for `check` (2 some fail, else 3 some
    error, else 1 some warn, else 0; a blocked check counts as the token check that blocks it). Exit 3 when
    the demo cannot start, or on a usage error.
    """
    from mailwarden.monitor import demo as demo_mod
    from mailwarden.monitor import logs, tune_malloc

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}", EXIT_UNKNOWN)
    if not once:
        tune_malloc()  # the long-running demo, before the sandbox's threads (README "Memory")
    logs.setup("warning" if once else "info")
    try:
        env = demo_mod.prepare(workdir, interval=interval, quiet=fmt == "json", web_port=None if once else port)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        if once:
            rows = env.run_once()
            if fmt == "json":
                typer.echo(json.dumps(rows, indent=2))
            else:
                from mailwarden.monitor.output import print_table

                print_table(rows, title="mailwarden demo: one cycle")
            raise typer.Exit(exit_code(rows))
        monitor = env.monitor()
        web = _web_for(monitor)
        typer.echo(f"config: {env.config_path}\nsandbox: {env.sandbox.base_url}\n"
                   f"Checking every {interval} s; a table follows each cycle. Ctrl-C stops.", err=True)
        if web is not None:
            typer.echo(f"\nDashboard: {web.url}/\n  sign in as {env.web_user} with password {env.web_password}"
                       "\n  (generated for this demo run; its hash is in the demo config)\n", err=True)
        from mailwarden.monitor.scheduler import preload as preload_jobs

        preload_checks(env.runtime.config)
        preload_jobs()
        freeze_heap()
        asyncio.run(_serve_forever(monitor, reload_on_hup=False, web=web))
    finally:
        env.close()
    sys.exit(0)
