"""The soak runs only when a -m expression names it: the default `-m "not soak"` (pyproject addopts) is
replaced by any -m on the command line, and `pytest -m "not slow"` or `-m slow` must not start a 30-minute
run."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    if "soak" in (config.getoption("markexpr") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("soak") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("soak")])
        items[:] = keep
