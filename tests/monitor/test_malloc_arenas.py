"""`mailwarden serve` and `mailwarden demo` cap glibc's malloc arenas (peak RSS, bench/) and pin its mmap threshold
(the soak's RSS creep) at start, and freeze their heap (full garbage collections' pauses, bench/); importing mailwarden
changes none of it; an operator's MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ wins. The heap trim gives pages back;
a frozen object that became garbage in a cycle is collected at a refreeze (a reload).

Each is observed in the process itself, from what malloc does (``PROBE``): how many arenas eight new threads get,
and whether a 1 MiB block comes from mmap after a 4 MiB one was freed (glibc's own threshold would have risen to
4 MiB). The commands run unmodified: a ``sitecustomize`` on PYTHONPATH installs the probe as a SIGUSR1 handler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailwarden.monitor import MALLOC_ARENAS
from tests.monitor.test_scheduler import MAILWARDEN, serve_config, serve_env

pytestmark = pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")
                                and not os.path.exists("/lib/aarch64-linux-gnu/libc.so.6"),
                                reason="glibc only: other C libraries have no malloc arenas to cap")

PROBE = textwrap.dedent("""\
    import ctypes, json, os, tempfile, threading

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    def malloc_probe():
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.mallinfo2.restype = _Mallinfo2
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
        # arenas: a thread's first allocation gets an arena of its own until the cap
        ready, done = threading.Barrier(9), threading.Event()

        def hold():
            block = libc.malloc(64)
            ready.wait()
            done.wait()
            libc.free(block)

        threads = [threading.Thread(target=hold) for _ in range(8)]
        for t in threads:
            t.start()
        ready.wait()
        with tempfile.NamedTemporaryFile(suffix=".xml") as info:
            fp = libc.fopen(info.name.encode(), b"w")
            libc.malloc_info(0, fp)
            libc.fclose(fp)
            arenas = open(info.name).read().count("<heap nr=")
        done.set()
        for t in threads:
            t.join()
        # the mmap threshold: freeing a mapped 4 MiB block raises glibc's own threshold to 4 MiB unless pinned
        libc.free(libc.malloc(4 << 20))
        before = libc.mallinfo2().hblks
        block = libc.malloc(1 << 20)
        mapped = libc.mallinfo2().hblks > before
        libc.free(block)
        return {"arenas": arenas, "mib_mapped": mapped}
    """)

# loaded at interpreter start by every process of the test (PYTHONPATH); the probe runs on SIGUSR1
SITECUSTOMIZE = PROBE + textwrap.dedent("""\
    if os.environ.get("MALLOC_PROBE_OUT"):
        import signal

        def _on_usr1(signum, frame):
            out = os.environ["MALLOC_PROBE_OUT"]
            import gc

            with open(out + ".part", "w") as fh:
                # the scheduler's jobs the collector still walks (gc.get_objects: every generation but the frozen)
                jobs = sum(1 for o in gc.get_objects() if type(o).__module__ == "apscheduler.job")
                json.dump({**malloc_probe(), "frozen": gc.get_freeze_count(), "jobs_in_sight": jobs}, fh)
            os.replace(out + ".part", out)

        signal.signal(signal.SIGUSR1, _on_usr1)
    """)


def probed_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in serve_env().items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    return env | {"PYTHONPATH": str(site), "MALLOC_PROBE_OUT": str(tmp_path / "probe.json")} | extra


def probe_running(command: str, tmp_path: Path, **env: str) -> dict:
    """Start `mailwarden <command>`, probe it once its scheduler runs, stop it."""
    if command == "serve":
        args = ["serve", "-c", str(serve_config(tmp_path / "mailwarden.yaml", ["keep"]))]
    else:
        args = ["demo", "--workdir", str(tmp_path / "demo"), "--port", "0"]
    err = tmp_path / "stderr.log"
    with err.open("w") as ferr:
        proc = subprocess.Popen([str(MAILWARDEN), *args], cwd=tmp_path, env=probed_env(tmp_path, **env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ferr)
    out = tmp_path / "probe.json"
    try:
        deadline = time.monotonic() + 60
        while "scheduler started" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.05)
        # "scheduler started" is logged before the jobs are frozen: probe again until they are (or the deadline)
        frozen_by = time.monotonic() + 5
        while True:
            proc.send_signal(signal.SIGUSR1)
            while not out.exists():
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
                time.sleep(0.05)
            if json.loads(out.read_text())["jobs_in_sight"] == 0 or time.monotonic() > frozen_by:
                break
            out.unlink()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return json.loads(out.read_text())


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_the_long_running_commands_tune_malloc_and_freeze_their_heap_at_start(command, tmp_path):
    probe = probe_running(command, tmp_path)
    assert probe.pop("frozen") > 50_000  # the imported code, out of the collector's sight (bench/: full GC pauses)
    # and the scheduler's jobs once it has started (bench/: 3,400 jobs were 20,000 objects each full collection of
    # the first interval walked)
    assert probe == {"arenas": MALLOC_ARENAS, "mib_mapped": True, "jobs_in_sight": 0}


def test_the_operators_settings_win(tmp_path):
    # glibc applies these at start; serve must not override them (2 MiB: a 1 MiB block stays in the heap)
    probe = probe_running("serve", tmp_path, MALLOC_ARENA_MAX="8", MALLOC_MMAP_THRESHOLD_=str(2 << 20))
    assert probe | {"frozen": 0, "jobs_in_sight": 0} == {"arenas": 8, "mib_mapped": False, "frozen": 0,
                                                         "jobs_in_sight": 0}


def test_importing_mailwarden_changes_nothing_in_malloc(tmp_path):
    """A process that imports mailwarden (a script, a test, the bench) keeps glibc's defaults."""
    code = PROBE + textwrap.dedent("""\
        import mailwarden.monitor, mailwarden.monitor.cli, mailwarden.monitor.cli_serve, mailwarden.monitor.scheduler
        import gc
        print(json.dumps({**malloc_probe(), "frozen": gc.get_freeze_count()}))
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    probe = json.loads(subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                                      text=True, check=True).stdout)
    assert probe["arenas"] > MALLOC_ARENAS and probe["mib_mapped"] is False and probe["frozen"] == 0


def test_the_heap_trim_gives_freed_pages_back(tmp_path):
    """Freed memory inside the heap is kept by malloc until trimmed: RSS falls when trim_heap runs."""
    code = """
import ctypes
from mailwarden.monitor import trim_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
blocks = [libc.malloc(4000) for _ in range(20000)]  # 80 MB in small blocks: from the heap, not mmap
for b in blocks:
    ctypes.memset(b, 1, 4000)
keep = blocks[-1]
for b in blocks[:-1]:
    libc.free(b)  # the block at the top stays: the heap cannot shrink from its end
before = rss()
print(trim_heap(), before - rss())
"""
    trimmed, freed_kb = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                       check=True).stdout.split()
    assert trimmed == "True" and int(freed_kb) > 50_000


def test_a_refreeze_collects_frozen_objects_that_became_garbage_and_a_freeze_alone_does_not(tmp_path):
    """What a reload relies on: the old runtime was frozen with the rest; once closed, its objects in reference
    cycles are garbage that only a refreeze lets the collector see."""
    code = """
import gc, weakref
from mailwarden.monitor import freeze_heap, refreeze_heap
class Runtime: pass
old = Runtime(); old.me = old  # a reference cycle, as SQLAlchemy's engine and pool make
gone = weakref.ref(old)
print(freeze_heap() > 1000)
del old
gc.collect()
print(gone() is not None)  # frozen: a collection does not see it
print(refreeze_heap() > 1000, gone() is None, gc.get_freeze_count() > 1000)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True", "True", "True"]


def test_freeze_later_freezes_what_the_first_checks_imported(tmp_path):
    code = """
import asyncio, gc
from mailwarden.monitor import freeze_heap, freeze_later
before = freeze_heap()
import msal  # what a first check imports at first use
asyncio.run(freeze_later(0.01))
print(gc.get_freeze_count() > before)
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.split() == ["True"]


def test_after_a_reload_the_heap_is_refrozen_once_the_checks_with_the_old_runtime_have_ended(tmp_path):
    """A check under way at the reload still holds the old runtime (and the connections its store opens): the
    refreeze waits, so that the runtime is collected once the check ends, not frozen again for good."""
    code = """
import asyncio, gc, weakref
from types import SimpleNamespace
from mailwarden.monitor import freeze_heap
from mailwarden.monitor.cli_serve import refreeze_after_reload
class Runtime: pass
old = Runtime(); old.me = old  # a reference cycle, as SQLAlchemy's engine and pool make
gone = weakref.ref(old)
freeze_heap()
cfg = SimpleNamespace(longest=lambda name: -59.95)  # the longest timeout and a minute: 0.05 s

async def check_under_way(runtime):
    await asyncio.sleep(0.02)  # ends after the reload, before the refreeze

async def main():
    global old
    running = asyncio.create_task(check_under_way(old))
    old = None  # the reload replaced it: only the check holds it now
    refreeze_after_reload(cfg)
    await running
    del running
    await asyncio.sleep(0.2)
    print(gone() is None)

asyncio.run(main())
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.split() == ["True"]


def test_a_long_running_command_imports_what_graph_checks_need_before_it_freezes(tmp_path):
    """msgraph-sdk and what it pulls in (about 650 modules, 52,000 objects) were imported by the first Graph check,
    after the heap was frozen at start: every full collection of the first interval walked them. With a graph_mail
    check configured they are imported, by building the check's requests, before the freeze; without one, nothing
    (half a second saved)."""
    code = """
import gc, sys
from types import SimpleNamespace
from mailwarden.endpoints import build
from mailwarden.monitor import freeze_heap, preload_checks
def config(kinds):
    return SimpleNamespace(integrations=[SimpleNamespace(checks=kinds)], endpoints_resolved=lambda: build("global"))
preload_checks(config({"token": {}, "imap": {}}))
print("msgraph" in sys.modules)
before = freeze_heap()
preload_checks(config({"token": {}, "graph_mail": {}}))
frozen = freeze_heap() - before  # what it imported, frozen with the rest
needed = ["msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder",
          "msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder",
          "msgraph.generated.models.o_data_errors.o_data_error", "kiota_http.httpx_request_adapter",
          "kiota_serialization_json.json_parse_node_factory", "msgraph_core"]
print(all(m in sys.modules for m in needed), frozen > 30_000)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stderr[-2000:]


def test_what_the_scheduler_imports_at_its_first_runs_is_imported_before_the_freeze(tmp_path):
    """The housekeeping jobs import lazily (one-shot commands never pay for them): the secrets cycle jinja2, the alert
    messages and apprise with its 275 plugin modules, the dispatch and the history rollup more. Imported after the
    start freeze, they were 507 modules whose objects every full collection of the first interval walked (bench/:
    cycle 1's pauses). Once ``scheduler.preload`` has run, as `serve` and `demo` do before freezing, a check, the
    history rollup, the secrets cycle and an alert dispatch import nothing of mailwarden, apprise or jinja2."""
    config = serve_config(tmp_path / "mailwarden.yaml", ["keep"])
    config.write_text(config.read_text().replace(
        "defaults:", "alerts: {routes: [{url: 'json://127.0.0.1:9/hook'}]}\ndefaults:"))
    code = f"""
import asyncio, sys
from mailwarden.monitor import config as config_mod, preload_checks
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor, preload
cfg = config_mod.load({str(config)!r})
monitor = Monitor(open_runtime(cfg), {str(config)!r})
preload_checks(cfg)
preload()

async def main():
    monitor.start()
    before = set(sys.modules)
    await monitor._run_local("keep", "token")  # refused at once (port 9): a failure, stored, with its diagnosis
    await monitor._history()
    await monitor._secrets()
    await monitor._dispatch()
    print(" ".join(sorted(set(sys.modules) - before)))
    await monitor.drain()
    monitor.shutdown()

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=serve_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    late = out.stdout.split()
    assert [m for m in late if m.split(".")[0] in ("mailwarden", "apprise", "jinja2")] == [], late
    assert len(late) <= 3, late  # e.g. netrc, read by requests at its first request
