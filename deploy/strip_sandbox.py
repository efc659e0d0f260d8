"""Leave the sandbox out of a production install (the Dockerfile's install step; tests/deploy runs it too).

`pip install .` installs two import packages: `mailwarden` and `mailwarden_sandbox` (the stand-in identity provider
and Exchange that the demo and the tests use). A production environment has no use for a fake identity provider:
this removes `mailwarden_sandbox` from the environment whose interpreter runs it, and its lines from the
distribution's RECORD, so pip's view of the install stays true. `mailwarden demo` and `mailwarden sandbox` then say
that the sandbox is not installed.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from importlib import metadata
from pathlib import Path


def main() -> int:
    spec = importlib.util.find_spec("mailwarden_sandbox")
    if spec is None or spec.origin is None:
        print("mailwarden_sandbox is not installed: nothing to remove")
        return 0
    package = Path(spec.origin).parent
    dist = metadata.distribution("mailwarden")
    if dist.files is None or not any(str(f).startswith("mailwarden_sandbox/") for f in dist.files):
        print(f"refusing: {package} is not part of an installed mailwarden wheel (an editable install?)",
              file=sys.stderr)
        return 1
    shutil.rmtree(package)
    record = Path(str(dist.locate_file(""))) / next(str(f) for f in dist.files if str(f).endswith("/RECORD"))
    rows = [row for row in csv.reader(record.read_text().splitlines()) if not row[0].startswith("mailwarden_sandbox/")]
    with record.open("w", newline="") as out:
        csv.writer(out).writerows(rows)
    print(f"removed {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
