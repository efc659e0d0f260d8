"""Structured, redacted logging: JSON lines when not on a terminal, short readable lines on one."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mailwarden.redact import redact, redact_obj

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            **redact_obj(_extras(record)),
        }
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in redact_obj(_extras(record)).items() if v is not None)
        line = f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} {record.levelname[:4]} " \
               f"{redact(record.getMessage())}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def setup(level: str = "info", *, stream=None, json_lines: bool | None = None) -> None:
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries log request URLs and bodies at debug; keep them at warning unless asked.
    for noisy in ("msal", "urllib3", "httpx", "httpcore", "apscheduler", "uvicorn.access", "kiota"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.INFO)
