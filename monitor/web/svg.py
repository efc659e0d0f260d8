"""Inline SVG (no script, no external file): uptime bars, latency sparklines, the expiry timeline.

Colours come from CSS classes (``.up``, ``.part``, ``.down``, ``.none``), so the same markup works in
the app and in the self-contained report.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape


def _cls(up: int, total: int) -> str:
    if total == 0:
        return "none"
    return "up" if up == total else ("down" if up == 0 else "part")


def bars(cells: list[tuple[datetime, int, int]], *, width: int = 240, height: int = 22, label: str = "") -> Markup:
    """One bar per (start, up, total) cell."""
    n = max(len(cells), 1)
    step = width / n
    parts = [f'<svg class="bars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(label)}">']
    for i, (start, up, total) in enumerate(cells):
        pct = f"{100 * up / total:.0f}% up" if total else "no data"
        tip = f'<title>{escape(start.strftime("%Y-%m-%d %H:%M"))} UTC: {pct}</title>' if total else ""
        parts.append(f'<rect class="{_cls(up, total)}" x="{i * step + 0.5:.1f}" y="0" width="{max(step - 1, 1):.1f}" '
                     f'height="{height}">{tip}</rect>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped


def windows(rollups: list[Any], check: str, now: datetime) -> list[dict[str, Any]]:
    """24 h in hours, 7 d in 6-hour cells, 30 d in days, each with its uptime percentage."""
    hours: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for r in rollups:
        if r.check == check:
            hours[r.hour][0] += r.ok + r.warn
            hours[r.hour][1] += r.total
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out = []
    for name, cell_h, count in (("24 h", 1, 24), ("7 d", 6, 28), ("30 d", 24, 30)):
        cells = []
        for i in range(count, 0, -1):
            start = top - timedelta(hours=cell_h * i)
            up = total = 0
            for k in range(cell_h):
                u, t = hours.get(start + timedelta(hours=k), (0, 0))
                up, total = up + u, total + t
            cells.append((start, up, total))
        up, total = sum(c[1] for c in cells), sum(c[2] for c in cells)
        out.append({"name": name, "svg": bars(cells, label=f"uptime {name}"),
                    "uptime": round(100 * up / total, 2) if total else None})
    return out


def sparkline(rollups: list[Any], check: str, now: datetime, *, hours: int = 168, width: int = 240,
              height: int = 36) -> Markup | None:
    """Hourly mean latency over the last ``hours``; None without data."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    points = [(r.hour, r.latency_sum_ms / r.latency_count) for r in rollups
              if r.check == check and r.latency_count and r.hour >= start]
    if not points:
        return None
    top = max(v for _, v in points) or 1.0
    span = timedelta(hours=hours - 1).total_seconds() or 1
    xy = [((h - start).total_seconds() / span * (width - 4) + 2, height - 2 - v / top * (height - 6))
          for h, v in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    last = points[-1][1]
    shape = (f'<polyline points="{coords}"/>' if len(xy) > 1 else
             f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="2"/>')
    svg = (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="latency, last 7 days">{shape}<title>hourly mean latency, last 7 days: max '
           f'{top:.0f} ms, latest {last:.0f} ms</title></svg>')
    return Markup(svg)  # noqa: S704 - numbers only


def expiry_timeline(creds: list[dict[str, Any]], *, days: int = 90, width: int = 720) -> Markup:
    """A line from today to +``days`` with one marker per credential (expired ones at the left edge)."""
    left, right, row_h = 90, 20, 22
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
        when = "expired" if c["expired"] else f"{d} d"
        parts.append(f'<text class="rowlabel" x="{left - 6}" y="{y + 4}">{escape(when)}</text>'
                     f'<circle class="{cls}" cx="{x:.1f}" cy="{y}" r="6"><title>{escape(c["app"])}: {escape(name)} '
                     f'(expires {escape(c["expires_at"] or "?")})</title></circle>'
                     f'<text class="marklabel" x="{x + 10:.1f}" y="{y + 4}">{escape(c["app"])} · {escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped
