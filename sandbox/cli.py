"""`python -m sandbox --scenario FILE --port N --workdir DIR`: serve in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .server import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="mailwarden's Entra ID/Graph sandbox")
    parser.add_argument("--scenario", required=True, type=Path, help="scenario YAML file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    for name in ("imap", "pop", "smtp"):
        parser.add_argument(f"--{name}-port", type=int, default=0, help=f"{name.upper()} port (default: a free one)")
    parser.add_argument("--workdir", type=Path, default=None, help="CA, certificates (default: a temp dir)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    sb = Sandbox(args.scenario, workdir=args.workdir, host=args.host, port=args.port, imap_port=args.imap_port,
                 pop_port=args.pop_port, smtp_port=args.smtp_port)
    sb.start()
    print(sb.describe(), flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sb.stop()
    print("sandbox stopped", file=sys.stderr)
    return 0
