"""The sandbox in its own process (so that mailwarden's CPU is measured alone), its control API and its CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from mailwarden_sandbox.control import ControlClient

_TICK = os.sysconf("SC_CLK_TCK")


class SandboxProcess:
    def __init__(self, scenario: Path, workdir: Path):
        self.workdir = workdir
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "mailwarden_sandbox", "--scenario", str(scenario), "--port", "0",
             "--workdir", str(workdir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        text = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # describe() prints indented JSON, then nothing until the end
            text += line
            if line.startswith("}"):
                break
        if not text:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the sandbox did not start: {err[-2000:]}")
        info = json.loads(text)
        self.base_url: str = info["base_url"]
        self.endpoints: dict[str, str] = info["endpoints"]
        self.ca_path: str = info["ca_path"]
        self.control = ControlClient(self.base_url, self.ca_path, timeout=60)
        # drain stderr so that a chatty sandbox never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        if self.proc.stderr is not None:
            for _ in self.proc.stderr:
                pass

    def cpu_s(self) -> float:
        """User + system CPU seconds of the sandbox process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def set_latency(self, ms: int) -> None:
        c = self.control
        c.clear_faults()
        for proto in ("imap", "pop", "smtp"):
            c.set_protocol_fault(proto, mode="latency" if ms else "none", latency_ms=ms)
        if ms:
            # every HTTP path (discovery, token endpoint, Graph, EWS); the control API is never delayed
            c.add_fault("/", status=None, count=None, latency_ms=ms)

    def stats(self) -> dict:
        return self.control.stats()

    def stop(self) -> None:
        try:
            self.control.close()
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
