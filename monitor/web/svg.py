"""Inline SVG (no script, no external file): availability and run bars, latency sparklines, the expiry timeline.

Colours come from CSS classes (``.up``, ``.part``, ``.down``, ``.none``), so the same markup works in
the app and in the self-contained report. A cell is (start, good, known): an integration's available and known
milliseconds (``monitor.db_history``), or a check's runs that were ok or warn and all its runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from markupsafe import Markup, escape

from mailwarden.days import words_for
from mailwarden.monitor.db_history import percent


def pct_text(value: float | None) -> str:
    """An availability figure as every page writes it: "99.7%", or "no data" when no time is known."""
    return "no data" if value is None else f"{value}%"


def _cls(up: int, total: int) -> str:
    if total == 0:
        return "none"
    return "up" if up == total else ("down" if up == 0 else "part")


def bars(cells: list[tuple[datetime, int, int]], *, width: int = 240, height: int = 22, label: str = "",
         runs: bool = False) -> Markup:
    """One bar per (start, good, known) cell, each with its tooltip: the cell's availability, or with ``runs``
    how many of the check's runs were ok or warn."""
    n = max(len(cells), 1)
    step = width / n
    parts = [f'<svg class="bars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(label)}">']
    for i, (start, up, total) in enumerate(cells):
        what = f"{up} of {total} runs ok or warn" if runs else f"{pct_text(percent(up, total - up))} available"
        tip = f'<title>{escape(start.strftime("%Y-%m-%d %H:%M"))} UTC: {what}</title>' if total else ""
        parts.append(f'<rect class="{_cls(up, total)}" x="{i * step + 0.5:.1f}" y="0" width="{max(step - 1, 1):.1f}" '
                     f'height="{height}">{tip}</rect>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped


@lru_cache(maxsize=2048)
def _strip(classes: tuple[str, ...], width: int, height: int) -> str:
    """One ``<path>`` per class, one sub-path per cell (same geometry as ``bars``); shared by every row with
    the same pattern."""
    step = width / max(len(classes), 1)
    w = max(step - 1, 1)
    runs: dict[str, list[str]] = defaultdict(list)
    for i, c in enumerate(classes):
        runs[c].append(f"M{i * step + 0.5:.1f} 0h{w:.1f}v{height}h-{w:.1f}z")
    return "".join(f'<path class="{c}" d="{"".join(d)}"/>' for c, d in runs.items())


def strip(cells: list[tuple[datetime, int, int]], *, width: int = 96, height: int = 16,
          label: str = "last 24 hours", unit: int = 1) -> Markup:
    """``bars`` in a few hundred bytes (the overview's 1,000 rows, the report): one path per class (ok, part,
    down, no data) and one tooltip naming the cells that were not fully up, instead of a rect and a title per
    cell. ``unit``: hours per cell (cells are then named by their start, date and hour)."""
    classes = tuple(_cls(up, total) for _, up, total in cells)
    fmt = "%H:%M" if unit == 1 else ("%m-%d" if unit == 24 else "%m-%d %H:%M")
    bad = [_fmt(start, fmt) for (start, _, _), c in zip(cells, classes, strict=True) if c in ("part", "down")]
    empty = classes.count("none")
    tip = f"{label} (UTC): " + (f"not fully up at {', '.join(bad)}" if bad else "no failure")
    if empty:
        tip += f"; {empty} of {len(cells)} without data"
    return Markup(  # noqa: S704 - numbers and class names only; the label is escaped
        f'<svg class="bars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(tip)}</title>{_strip(classes, width, height)}</svg>')


def day_strip(starts: list[datetime], flat: list[int]) -> Markup:
    """``strip`` of the overview's 24 hours from the hour starts and the flat (up, known, up, known, ...)
    milliseconds of the integration's availability."""
    return strip(list(zip(starts, flat[0::2], flat[1::2], strict=True)), label="availability, last 24 hours")


def _fmt(t: datetime, fmt: str) -> str:
    return f"{t.hour:02d}:{t.minute:02d}" if fmt == "%H:%M" else t.strftime(fmt)


class Window(NamedTuple):
    key: str  # in the API's names: availability_24h
    name: str  # as the pages write it
    start: datetime
    hours_per_cell: int
    cells: int


WINDOWS = (("24h", "24 h", 1, 24), ("7d", "7 d", 6, 28), ("30d", "30 d", 24, 30))  # key, name, hours per cell, cells
# an integration's page only: its daily rollups over 90 days (``retention.rollup_days``, 90 by default, keeps them)
LONG_WINDOW = ("90d", "90 d", 24, 90)


def by_check(rows: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows whose first item is the check, by check."""
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        out[r[0]].append(r)
    return out


def window_starts(now: datetime, *, long: bool = False) -> list[Window]:
    """The 24 h, 7 d and 30 d windows: they end with the current hour (the 24 h one is the overview's 24 hourly
    cells). Every availability figure and bar of every surface is read over these; ``long``: and the 90 days of
    an integration's page (``LONG_WINDOW``)."""
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return [Window(key, name, top - timedelta(hours=cell_h * count), cell_h, count)
            for key, name, cell_h, count in (*WINDOWS, LONG_WINDOW) if long or key != LONG_WINDOW[0]]


def _cell_rows(w: Window, sums: list[list[int]]) -> list[tuple[datetime, int, int]]:
    return [(w.start + timedelta(hours=w.hours_per_cell * i), good, known) for i, (good, known) in enumerate(sums)]


def availability_windows(cells: dict[str, list[tuple[int, int, int]]], now: datetime, *,
                         compact: bool = False, long: bool = False) -> list[dict[str, Any]]:
    """An integration's availability over each window: its bars and figure. ``cells``: per window key, the
    (cell, up_ms, down_ms) rows ``store.history.availability_cells`` sums from the window's start. The figure is the
    cells' sum: the same rows as the overview's, the API's and /metrics' figures over the same window."""
    out = []
    for w in window_starts(now, long=long):
        sums = [[0, 0] for _ in range(w.cells)]
        up = down = 0
        for i, cell_up, cell_down in cells.get(w.key, []):
            if 0 <= i < w.cells:
                sums[i][0] += cell_up
                sums[i][1] += cell_up + cell_down
                up, down = up + cell_up, down + cell_down
        row, label = _cell_rows(w, sums), f"availability {w.name}"
        svg = (strip(row, width=240, height=22, label=label, unit=w.hours_per_cell) if compact
               else bars(row, label=label))
        out.append({"key": w.key, "name": w.name, "svg": svg, "percent": percent(up, down)})
    return out


def run_windows(cells: dict[str, list[tuple[str, int, int, int]]], checks: list[str], now: datetime, *,
                compact: bool = False, long: bool = False) -> dict[str, list[dict[str, Any]]]:
    """For each of ``checks``: its runs over each window (24 h in hours, 7 d in 6-hour cells, 30 d in days), how
    many were ok or warn, as bars. ``cells``: per window key, (check, cell, good, total) rows as
    ``store.history.uptime_cells`` sums them. ``compact``: ``strip`` bars (one tooltip per bar: the report)."""
    out: dict[str, list[dict[str, Any]]] = {check: [] for check in checks}
    for w in window_starts(now, long=long):
        sums = {check: [[0, 0] for _ in range(w.cells)] for check in checks}
        for check, i, up, total in cells.get(w.key, []):
            if check in sums and 0 <= i < w.cells:
                sums[check][i][0] += up
                sums[check][i][1] += total
        label = f"runs {w.name}"
        for check in checks:
            row = _cell_rows(w, sums[check])
            good, total = sum(c[1] for c in row), sum(c[2] for c in row)
            svg = (strip(row, width=240, height=22, label=label, unit=w.hours_per_cell) if compact
                   else bars(row, label=label, runs=True))
            out[check].append({"key": w.key, "name": w.name, "svg": svg, "good": good, "total": total})
    return out


BEAT_CLASS = {"ok": "up", "warn": "part", "fail": "down", "error": "down", "blocked": "down"}


def beats(runs: list[Any], *, slots: int = 60, width: int = 240, height: int = 22) -> Markup | None:
    """The last runs of a check, one bar each, the newest at the right (``runs``: stored results, newest first, at
    most ``slots``): its status as the colour, its time, status, diagnosis and latency in its tooltip. None without
    a run. Only what is stored: raw results are kept by age (``retention.raw_hours``) and count."""
    if not runs:
        return None
    runs = list(reversed(runs[:slots]))
    step = width / slots
    first = slots - len(runs)
    good = sum(1 for r in runs if r.status in ("ok", "warn"))
    label = f"last {len(runs)} run{'s' if len(runs) != 1 else ''}: {good} ok or warn"
    parts = [f'<svg class="bars beats" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{label}">']
    if first:  # the slots no run has filled yet, as one "no data" path
        parts.append(_strip(("none",) * first, first * width / slots, height))
    for i, r in enumerate(runs):
        what = r.status + (f" ({r.code})" if r.code else "")
        took = f", {r.latency_ms:.0f} ms" if r.latency_ms is not None else ""
        tip = f'{r.checked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")} UTC: {what}{took}'
        parts.append(f'<rect class="{BEAT_CLASS.get(r.status, "none")}" x="{(first + i) * step + 0.5:.1f}" y="0" '
                     f'width="{max(step - 1, 1):.1f}" height="{height}"><title>{escape(tip)}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped


def _nice(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value``: the top of a latency axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def latency_chart(points: list[tuple[datetime, float]], *, label: str, unit: str = "run", width: int = 300,
                  height: int = 78, measure: str = "ms") -> Markup | None:
    """Latency in ms over time, with its axes: 0 and the top value on the left, the first and the last time below,
    a dot per point whose tooltip holds its time and value; ``unit``: "run" (one point a run, times as HH:MM) or
    "hour" (hourly means, times as MM-DD HH:00); ``measure``: the values' unit ("ms", or "s" for the canary's
    delivery delay). The figures beside it (latest, median, max) are ``latency_figures``'. None without a point."""
    points = sorted(points)
    if not points:
        return None
    left, right, top_pad, bottom = 44, 6, 6, 16
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = _nice(max(v for _, v in points))
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0).total_seconds()

    def x(t: datetime) -> float:
        return left + (plot_w / 2 if span == 0 else (t - t0).total_seconds() / span * plot_w)

    def y(v: float) -> float:
        return top_pad + plot_h - v / top * plot_h

    fmt = "%H:%M" if unit == "run" else "%m-%d %H:00"
    xy = [(x(t), y(v)) for t, v in points]
    parts = [f'<svg class="latency" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(label)}">',
             f'<line class="grid" x1="{left}" y1="{top_pad}" x2="{width - right}" y2="{top_pad}"/>',
             f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{width - right}" y2="{top_pad + plot_h}"/>',
             f'<line class="axis" x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}"/>',
             f'<text class="ylabel" x="{left - 4}" y="{top_pad}">{top:g} {measure}</text>',
             f'<text class="ylabel" x="{left - 4}" y="{top_pad + plot_h}">0</text>',
             f'<text class="xlabel start" x="{left}" y="{height - 3}">{t0.astimezone(UTC).strftime(fmt)}</text>']
    if span:
        parts.append(f'<text class="xlabel end" x="{width - right}" y="{height - 3}">'
                     f'{t1.astimezone(UTC).strftime(fmt)}</text>')
    if len(xy) > 1:
        parts.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}"/>')
    for (t, v), (a, b) in zip(points, xy, strict=True):
        parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{2.5 if len(xy) < 40 else 1.6}"><title>'
                     f'{t.astimezone(UTC).strftime("%Y-%m-%d %H:%M")} UTC: {v:.0f} {measure}'
                     f'{" (mean of the hour)" if unit == "hour" else ""}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and times only; the label is escaped


def latency_figures(values: list[float], measure: str = "ms") -> str:
    """"latest 42 ms · median 40 ms · max 120 ms" of latencies oldest first."""
    ordered = sorted(values)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1]
                                                                    + ordered[len(ordered) // 2]) / 2
    return f"latest {values[-1]:.0f} {measure} · median {median:.0f} {measure} · max {ordered[-1]:.0f} {measure}"


def sparkline(points: list[tuple[str, datetime, float]], check: str | None, now: datetime, *, hours: int = 168,
              width: int = 240, height: int = 36) -> Markup | None:
    """Hourly mean latency over the last ``hours``; None without data. ``points``: (check, hour, mean ms) of any
    checks (``check`` picks one) or, with ``check=None``, of one check."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    series = sorted((h, v) for k, h, v in points if (check is None or k == check) and h >= start)
    if not series:
        return None
    top = max(v for _, v in series) or 1.0
    span = timedelta(hours=hours - 1).total_seconds() or 1
    xy = [((h - start).total_seconds() / span * (width - 4) + 2, height - 2 - v / top * (height - 6))
          for h, v in series]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    last = series[-1][1]
    shape = (f'<polyline points="{coords}"/>' if len(xy) > 1 else
             f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="2"/>')
    svg = (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="latency, last 7 days">{shape}<title>hourly mean latency, last 7 days: max '
           f'{top:.0f} ms, latest {last:.0f} ms</title></svg>')
    return Markup(svg)  # noqa: S704 - numbers only


def expiry_timeline(creds: list[dict[str, Any]], *, days: int = 90, width: int = 760) -> Markup:
    """A line from today to +``days`` with one marker per credential (expired ones at the left edge), each labelled
    with the day count of ``checks.days`` ("10 days left", "expired 3 days ago")."""
    left, right, row_h = 130, 20, 22
    usable = width - left - right
    height = 34 + row_h * len(creds)
    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="credential expiry, next {days} days">',
             f'<line class="axis" x1="{left}" y1="20" x2="{width - right}" y2="20"/>']
    for d in range(0, days + 1, 15):
        x = left + usable * d / days
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height}"/>'
                     f'<text class="ticklabel" x="{x:.1f}" y="12">{"today" if d == 0 else f"+{d} d"}</text>')
    for i, c in enumerate(creds):
        y = 34 + row_h * i
        d = c["days_left"] if c["days_left"] is not None else days
        x = left + usable * max(0, min(d, days)) / days
        cls = "expired" if c["expired"] else ("soon" if d <= 30 else "later")
        name = c["display_name"] or c["key_id"] or c["kind"]
        when = words_for(c["days_left"], c["expired"])
        parts.append(f'<text class="rowlabel" x="{left - 6}" y="{y + 4}">{escape(when)}</text>'
                     f'<circle class="{cls}" cx="{x:.1f}" cy="{y}" r="6"><title>{escape(c["app"])}: {escape(name)} '
                     f'(expires {escape(c["expires_at"] or "?")})</title></circle>'
                     f'<text class="marklabel" x="{x + 10:.1f}" y="{y + 4}">{escape(c["app"])} · {escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped
