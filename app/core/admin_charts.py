"""Server-rendered HTML for /admin/: inline SVG charts of each worker's memory history, no JS."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from typing import Any

MIB = 1024 * 1024
WIDTH, HEIGHT = 640, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 10, 18
LABEL_GAP = 11.0  # px between two threshold labels in one column (10 px text)
MAX_POINTS = 150  # per line (~4 px apart): a chart stays ~1 KiB whatever max_samples is
THRESHOLD_COLOURS = {
    "soft_limit_mb": "#c90",
    "hard_limit_mb": "#d60",
    "recycle_limit_mb": "#c00",
    "max_worker_rss_mb": "#800",
}
EVENT_COLOURS = {"start": "#2a2", "stop": "#666", "recycle": "#c00", "cleanup": "#d60"}

STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;max-width:1340px}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .3em}
.worker{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin-bottom:1em}
.charts{display:flex;flex-wrap:wrap;gap:1em}svg{background:#fafafa;border:1px solid #eee}
.axis{font-size:10px;fill:#666}.halo{paint-order:stroke;stroke:#fafafa;stroke-width:3px}
.muted{color:#777}.legend span{margin-right:1em}
form{display:inline}"""


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k) >= value."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover  (the loop ends at 10 x power >= value)


def _label_rows(ys: Sequence[float], gap: float = LABEL_GAP) -> list[float]:
    """Baselines for labels just above lines at `ys` (top first) in two alternating columns.

    A label closer than `gap` to the one above it in its column goes lower, so limits a few
    MiB apart (recycle 280, max worker rss 300) stay readable.
    """
    rows: list[float] = []
    for index, y in enumerate(ys):
        row = y - 2
        if index >= 2 and row < rows[index - 2] + gap:
            row = rows[index - 2] + gap
        rows.append(row)
    return rows


def _downsample(
    times: Sequence[float], values: Sequence[float | None]
) -> list[tuple[float, float]]:
    """At most MAX_POINTS points, keeping each bucket's peak (memory peaks are what matter)."""
    points = [(t, v) for t, v in zip(times, values, strict=False) if v is not None]
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return [max(points[i : i + step], key=lambda p: p[1]) for i in range(0, len(points), step)]


class _Axes:
    def __init__(self, t0: float, t1: float, y_max: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1.0)
        self.y_max = y_max if y_max > 0 else 1.0

    def x(self, t: float) -> float:
        span = WIDTH - PAD_LEFT - PAD_RIGHT
        return PAD_LEFT + (t - self.t0) / (self.t1 - self.t0) * span

    def y(self, value: float) -> float:
        span = HEIGHT - PAD_TOP - PAD_BOTTOM
        return HEIGHT - PAD_BOTTOM - min(value, self.y_max) / self.y_max * span


def _polyline(axes: _Axes, points: list[tuple[float, float]], colour: str, dash: str = "") -> str:
    coords = " ".join(f"{axes.x(t):.0f},{axes.y(v):.0f}" for t, v in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{extra} points="{coords}"/>'


def _frame(axes: _Axes, unit: str, series: str, n_points: int, body: list[str]) -> str:
    minutes = (axes.t1 - axes.t0) / 60
    return (
        f'<svg class="chart" data-series="{series}" data-points="{n_points}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - PAD_RIGHT}" '
        f'y2="{HEIGHT - PAD_BOTTOM}" stroke="#999"/>'
        f'<text class="axis" x="2" y="{PAD_TOP + 8}">{_fmt(axes.y_max)} {unit}</text>'
        f'<text class="axis" x="2" y="{HEIGHT - PAD_BOTTOM}">0</text>'
        f'<text class="axis" x="{PAD_LEFT}" y="{HEIGHT - 4}">-{_fmt(minutes)} min</text>'
        f'<text class="axis" x="{WIDTH - PAD_RIGHT - 24}" y="{HEIGHT - 4}">now</text>'
        + "".join(body)
        + "</svg>"
    )


def rss_chart(worker: dict[str, Any], thresholds: dict[str, int | None], t0: float) -> str:
    """RSS (and cgroup usage) in MiB over time against the profile's thresholds, with events."""
    times = worker.get("wall_time", [])
    rss = [v / MIB for v in worker.get("rss_bytes", [])]
    # The cgroup's usage is the whole container's (every worker plus the master): drawn only
    # when the container has a limit, which is what the fraction levels compare it with.
    cgroup: list[float | None] = []
    if worker.get("container_limit_bytes") is not None:
        cgroup = [None if v is None else v / MIB for v in worker.get("container_usage_bytes", [])]
    limits = {k: v for k, v in thresholds.items() if v is not None}
    y_max = _nice_ceiling(
        max([*rss, *(v for v in cgroup if v is not None), *limits.values(), 1.0]) * 1.05
    )
    axes = _Axes(t0, time.time(), y_max)
    points = _downsample(times, rss)
    body = [_polyline(axes, points, "#1565c0")]
    cgroup_points = _downsample(times, cgroup)
    if cgroup_points:
        body.append(_polyline(axes, cgroup_points, "#7b1fa2", dash="4 3"))
    ordered = sorted(limits.items(), key=lambda item: -item[1])  # top line first
    rows = _label_rows([axes.y(limit) for _, limit in ordered])
    for index, ((key, limit), label_y) in enumerate(zip(ordered, rows, strict=True)):
        y = axes.y(limit)
        label_x = WIDTH - PAD_RIGHT - (150 if index % 2 else 270)  # staggered: close limits
        colour = THRESHOLD_COLOURS.get(key, "#999")
        label = key.removesuffix("_mb").replace("_", " ")
        body.append(
            f'<line class="threshold" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{colour}" stroke-dasharray="2 3"><title>{label} {limit} MiB'
            f'</title></line><text class="axis halo" x="{label_x}" y="{label_y:.1f}" '
            f'fill="{colour}">{label} {limit}</text>'
        )
    for event in worker.get("events", []):
        if event["wall_time"] < axes.t0:
            continue
        x = axes.x(event["wall_time"])
        colour = EVENT_COLOURS.get(event["kind"], "#333")
        tip = html.escape(f"{event['kind']}: {event['detail']}")
        body.append(
            f'<g class="event"><line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_TOP}" '
            f'y2="{HEIGHT - PAD_BOTTOM}" stroke="{colour}" stroke-width="1" opacity=".6"/>'
            f'<circle cx="{x:.1f}" cy="{PAD_TOP + 3}" r="3" fill="{colour}"><title>{tip}</title>'
            f"</circle></g>"
        )
    return _frame(axes, "MiB", "rss", len(points), body)


def cache_chart(worker: dict[str, Any], name: str, t0: float) -> str:
    """One cache's entries (blue, left scale) and per-interval hit rate (green, 0-100 %)."""
    times = worker.get("wall_time", [])
    series = worker.get("caches", {}).get(name, {})
    entries = [None if v is None else float(v) for v in series.get("entries", [])]
    # At least 10: an empty or tiny cache gets a plain scale, not "1.2 entries".
    y_max = _nice_ceiling(max([v for v in entries if v is not None] + [10.0]) * 1.05)
    axes = _Axes(t0, time.time(), y_max)
    entry_points = _downsample(times, entries)
    rates = [None if v is None else v * y_max for v in series.get("hit_rate", [])]
    rate_points = _downsample(times, rates)
    body = [_polyline(axes, entry_points, "#1565c0")]
    if rate_points:
        body.append(_polyline(axes, rate_points, "#2e7d32", dash="3 2"))
    body.append(
        f'<text class="axis" x="{WIDTH - PAD_RIGHT - 60}" y="{PAD_TOP + 8}" fill="#2e7d32">'
        "hit rate 100%</text>"
    )
    return _frame(axes, "entries", f"cache-{name}", len(entry_points), body)


def _size(size_bytes: int) -> str:
    return f"{_fmt(size_bytes / MIB)} MiB" if size_bytes >= MIB else f"{size_bytes / 1024:.0f} KiB"


def _count(values: Sequence[Any], noun: str) -> str:
    return f"{len(values)} {noun}{'' if len(values) == 1 else 's'}"


def _latest(values: Sequence[Any]) -> Any:
    return values[-1] if values else None


def _worker_section(worker: dict[str, Any], thresholds: dict[str, int | None], t0: float) -> str:
    pid = int(worker.get("pid", 0))
    rss = _latest(worker.get("rss_bytes", []))
    state = "live" if worker.get("is_alive", True) else "exited"
    if worker.get("is_self"):
        state += ", answered this page"
    caches = worker.get("caches", {})
    cache_lines = []
    for name in caches:
        series = caches[name]
        entries = _latest(series.get("entries", []))
        size = _latest(series.get("bytes", []))
        rate = next((r for r in reversed(series.get("hit_rate", [])) if r is not None), None)
        cache_lines.append(
            f"<h2>cache {html.escape(name)}: {entries} entries, "
            f"{_size(size or 0)}, hit rate "
            f"{'-' if rate is None else f'{rate * 100:.1f} %'}</h2>{cache_chart(worker, name, t0)}"
        )
    rss_text = "-" if rss is None else f"{_fmt(rss / MIB)} MiB"
    return (
        f'<section class="worker" data-pid="{pid}"><h2>worker {pid} ({state}): RSS {rss_text}, '
        f"level {html.escape(str(_latest(worker.get('level', [])) or '-'))}, "
        f"{_count(worker.get('wall_time', []), 'sample')}, "
        f"{_count(worker.get('events', []), 'event')}</h2>"
        f'<div class="charts"><div>{rss_chart(worker, thresholds, t0)}</div>'
        f"<div>{''.join(cache_lines)}</div></div></section>"
    )


def page(data: dict[str, Any]) -> str:
    """The whole /admin/ page for the JSON that GET /admin/memory/history returns."""
    workers = data["workers"]
    thresholds = data["thresholds_mb"]
    starts = [w["wall_time"][0] for w in workers if w.get("wall_time")]
    starts += [w["events"][0]["wall_time"] for w in workers if w.get("events")]
    t0 = min(starts) if starts else time.time() - 60
    sections = "".join(_worker_section(w, thresholds, t0) for w in workers)
    limits = ", ".join(f"{k.removesuffix('_mb')} {v} MiB" for k, v in thresholds.items() if v)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{max(10, int(data["interval_seconds"]))}">'
        f"<title>memory history</title><style>{STYLE}</style></head><body>"
        "<h1>Memory history per worker</h1>"
        f'<p class="muted">One sample every {_fmt(data["interval_seconds"])} s, '
        f"up to {data['max_samples']} per worker; thresholds: {limits or 'none'}. "
        "Blue: RSS; dashed purple: cgroup usage; markers: events (hover). JSON: "
        '<a href="/admin/memory/history">/admin/memory/history</a>. '
        '<form method="post" action="/admin/logout"><button>log out</button></form></p>'
        f"{sections or '<p>No samples yet.</p>'}</body></html>"
    )


def login_page(message: str = "") -> str:
    """The token form: POSTed, never put in a URL; the answer sets an HttpOnly cookie."""
    note = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>admin login</title><style>{STYLE}</style></head><body>"
        f"<h1>Admin</h1>{note}"
        '<form method="post" action="/admin/login" autocomplete="off">'
        '<label>Admin token <input type="password" name="token" id="token" required '
        'autofocus></label> <button type="submit" id="login">Open</button></form>'
        '<p class="muted">The token is sent once in the form body; the answer is a cookie '
        "limited to /admin (HttpOnly, SameSite=Strict) holding a signed session, not the token."
        "</p></body></html>"
    )
