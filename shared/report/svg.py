"""A small plotting kit that writes inline SVG: enough for the report's line charts, step
histograms and bar charts, with axes, ticks, legends and markers. No dependency and no
script, so a page that embeds these renders anywhere, offline, forever.

Every function returns one ``<svg>`` element as text; numbers are rounded to 0.1 px."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999933", "#000000")
PASS, FAIL, MUTED, INK, GRID = "#009E73", "#D55E00", "#8a8a8a", "#222222", "#e3e3e3"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _r(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if math.isfinite(v) else "0"


def fmt(v: float) -> str:
    """Compact tick label: 0.005, 0.25, 12, 1.5k, 2M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1:
        return f"{v:.4g}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-6:
        if t >= lo - step * 1e-6:
            ticks.append(round(t, 12))
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks within [lo, hi] (both > 0); decades only when that gives too many."""
    if lo <= 0 or hi <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    out = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mantissa in (1.0, 2.0, 5.0):
            v = mantissa * 10.0**exp
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(v)
    if len(out) > 9:
        out = [v for v in out if f"{v:e}".startswith("1")]
    if len(out) < 3:  # a narrow range: denser mantissas, still round numbers
        out = []
        for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
            for mantissa in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0):
                v = mantissa * 10.0**exp
                if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                    out.append(v)
    if len(out) < 2:
        out = nice_ticks(lo, hi, 4)
    return out


@dataclass
class Frame:
    """Maps data coordinates to pixels inside margins."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_log: bool = False
    y_log: bool = False
    left: int = 58
    right: int = 16
    top: int = 30
    bottom: int = 44

    def _scale(self, v: float, rng: tuple[float, float], log: bool, a: float, b: float) -> float:
        lo, hi = rng
        if log:
            v, lo, hi = math.log10(max(v, 1e-300)), math.log10(lo), math.log10(hi)
        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return a + t * (b - a)

    def x(self, v: float) -> float:
        return self._scale(v, self.x_range, self.x_log, self.left, self.width - self.right)

    def y(self, v: float) -> float:
        return self._scale(v, self.y_range, self.y_log, self.height - self.bottom, self.top)

    def axes(
        self,
        x_ticks: Sequence[float],
        y_ticks: Sequence[float],
        x_label: str,
        y_label: str,
        x_fmt: Callable[[float], str] = fmt,
        y_fmt: Callable[[float], str] = fmt,
    ) -> list[str]:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        out = []
        for t in y_ticks:
            py = _r(self.y(t))
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{py}" y2="{py}" stroke="{GRID}"/>')
            out.append(f'<text x="{x0 - 6}" y="{py}" dy="0.32em" text-anchor="end">{esc(y_fmt(t))}</text>')
        for t in x_ticks:
            px = _r(self.x(t))
            out.append(f'<line x1="{px}" x2="{px}" y1="{y0}" y2="{y0 + 4}" stroke="{INK}"/>')
            out.append(f'<text x="{px}" y="{y0 + 16}" text-anchor="middle">{esc(x_fmt(t))}</text>')
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="{INK}"/>')
        out.append(f'<line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="{INK}"/>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.height - 8}" text-anchor="middle">{esc(x_label)}</text>')
        mid = f"{(y0 + y1) / 2:.1f}"
        out.append(f'<text transform="translate(14 {mid}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>')
        return out


def document(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(title)}" style="{FONT};font-size:11px;max-width:100%;height:auto">'
        f"<title>{esc(title)}</title>" + "".join(body) + "</svg>"
    )


def legend(items: Sequence[tuple[str, str]], x: float, y: float, *, dashed: Sequence[bool] = ()) -> list[str]:
    """One row of (label, colour) swatches starting at (x, y)."""
    out, px = [], x
    for i, (label, c) in enumerate(items):
        dash = ' stroke-dasharray="4 3"' if i < len(dashed) and dashed[i] else ""
        out.append(f'<line x1="{_r(px)}" x2="{_r(px + 16)}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2.5"{dash}/>')
        out.append(f'<text x="{_r(px + 20)}" y="{y}" dy="0.32em">{esc(label)}</text>')
        px += 28 + 6.2 * len(label)
    return out


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = ""
    dashed: bool = False
    # per-point marker colours (e.g. red for a regression); empty: the series colour
    marker_colors: list[str] = field(default_factory=list)


@dataclass
class VLine:
    x: float
    label: str
    color: str = FAIL


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    y_range: tuple[float, float] | None = None,
    vlines: Sequence[VLine] = (),
    x_fmt: Callable[[float], str] = fmt,
    y_fmt: Callable[[float], str] = fmt,
    x_ticks: Sequence[float] | None = None,
    width: int = 880,
    height: int = 300,
) -> str:
    xs = [p[0] for s in series for p in s.points] + [v.x for v in vlines]
    ys = [p[1] for s in series for p in s.points]
    if not xs or not ys:
        return document(width, 60, title, [f'<text x="10" y="30">{esc(title)}: no data</text>'])
    x_lo, x_hi = min(xs), max(xs)
    if x_lo == x_hi:
        x_lo, x_hi = (x_lo / 2, x_hi * 2) if x_log else (x_lo - 1, x_hi + 1)
    if y_range is None:
        y_lo, y_hi = min(ys), max(ys)
        pad = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.1 or 1.0
        y_range = (max(0.0, y_lo - pad) if y_lo >= 0 else y_lo - pad, y_hi + pad)
    frame = Frame(width, height, (x_lo, x_hi), y_range, x_log=x_log)
    if x_ticks is None:
        x_ticks = log_ticks(x_lo, x_hi) if x_log else nice_ticks(x_lo, x_hi, 6)
    body = frame.axes(x_ticks, nice_ticks(*y_range, 5), x_label, y_label, x_fmt, y_fmt)
    for v in vlines:
        px = _r(frame.x(v.x))
        body.append(
            f'<line x1="{px}" x2="{px}" y1="{frame.top}" y2="{frame.height - frame.bottom}" stroke="{v.color}" '
            'stroke-dasharray="5 4" stroke-width="1.5"/>'
        )
        body.append(f'<text x="{px}" y="{frame.top - 4}" text-anchor="middle" fill="{v.color}">{esc(v.label)}</text>')
    for i, s in enumerate(series):
        c = s.color or color(i)
        pts = sorted(s.points)
        path = " ".join(f"{_r(frame.x(x))},{_r(frame.y(y))}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        if len(pts) > 1:
            body.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for j, (x, y) in enumerate(s.points):
            mc = s.marker_colors[j] if j < len(s.marker_colors) and s.marker_colors[j] else c
            body.append(
                f'<circle cx="{_r(frame.x(x))}" cy="{_r(frame.y(y))}" r="3.2" fill="{mc}">'
                f"<title>{esc(s.name)}: {esc(x_fmt(x))}, {esc(y_fmt(y))}</title></circle>"
            )
    body += legend(
        [(s.name, s.color or color(i)) for i, s in enumerate(series)], frame.left, 12, dashed=[s.dashed for s in series]
    )
    return document(width, height, title, body)


def step_histograms(
    items: Sequence[tuple[str, list[float], list[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    markers: Sequence[tuple[int, float, str]] = (),
    width: int = 880,
    height: int = 300,
) -> str:
    """Overlaid step outlines over shared log-spaced ``edges`` (one (name, edges, heights)
    per series; heights already normalised). ``markers``: (series index, x, label) ticks
    drawn below the axis in the series colour, e.g. p50 and p99."""
    items = [it for it in items if it[1] and it[2]]
    if not items:
        return document(width, 60, title, [f'<text x="10" y="30">{esc(title)}: no data</text>'])
    edges = items[0][1]
    top = max(max(h) for _, _, h in items) or 1.0
    frame = Frame(width, height, (edges[0], edges[-1]), (0.0, top * 1.08), x_log=True, bottom=52)
    body = frame.axes(
        log_ticks(edges[0], edges[-1]), nice_ticks(0.0, top * 1.08, 4), x_label, y_label, y_fmt=lambda v: f"{v:.0%}"
    )
    for i, (name, e, h) in enumerate(items):
        c = color(i)
        pts = [f"{_r(frame.x(e[0]))},{_r(frame.y(0))}"]
        for j, height_j in enumerate(h):
            y = _r(frame.y(height_j))
            pts.append(f"{_r(frame.x(e[j]))},{y}")
            pts.append(f"{_r(frame.x(e[j + 1]))},{y}")
        pts.append(f"{_r(frame.x(e[-1]))},{_r(frame.y(0))}")
        body.append(
            f'<polyline points="{" ".join(pts)}" fill="{c}" fill-opacity="0.10" stroke="{c}" stroke-width="1.6">'
            f"<title>{esc(name)}</title></polyline>"
        )
    base = frame.height - frame.bottom
    for idx, x, label in markers:
        if not edges[0] <= x <= edges[-1]:
            continue
        px = _r(frame.x(x))
        c = color(idx)
        body.append(f'<line x1="{px}" x2="{px}" y1="{base}" y2="{base - 8}" stroke="{c}" stroke-width="2.5">')
        body.append(f"<title>{esc(label)}</title></line>")
    body += legend([(name, color(i)) for i, (name, _, _) in enumerate(items)], frame.left, 12)
    return document(width, height, title, body)


def bar_rows(
    rows: Sequence[tuple[str, float | None, float | None, bool | None]],
    *,
    title: str,
    x_label: str,
    log: bool = True,
    width: int = 880,
) -> str:
    """Horizontal bars, one per row (label, value, limit, passed): the bar is the measured
    value, a black tick the limit; green when passed, red when not, grey when unknown."""
    known = [v for _, v, _, _ in rows if v is not None and (v > 0 or not log)]
    limits = [lim for _, _, lim, _ in rows if lim is not None and (lim > 0 or not log)]
    height = 40 + 26 * len(rows) + 40
    if not known and not limits:
        return document(width, 60, title, [f'<text x="10" y="30">{esc(title)}: no data</text>'])
    lo_v, hi_v = min(known + limits), max(known + limits)
    if log:
        lo, hi = lo_v / 3, hi_v * 3
    else:
        lo, hi = 0.0, hi_v * 1.1 or 1.0
    label_w = min(260, 30 + 6 * max(len(r[0]) for r in rows))
    frame = Frame(width, height, (lo, hi), (0, len(rows)), x_log=log, left=label_w, top=20, bottom=40)
    body = frame.axes(log_ticks(lo, hi) if log else nice_ticks(lo, hi, 5), [], x_label, "")
    for i, (label, value, limit, passed) in enumerate(rows):
        y = frame.top + 26 * i + 6
        body.append(f'<text x="{label_w - 6}" y="{y + 8}" dy="0.32em" text-anchor="end">{esc(label)}</text>')
        c = MUTED if passed is None else (PASS if passed else FAIL)
        if value is not None and (value > 0 or not log):
            x0 = frame.left
            x1 = frame.x(value)
            body.append(
                f'<rect x="{x0}" y="{y}" width="{_r(max(1.0, x1 - x0))}" height="16" fill="{c}" fill-opacity="0.8">'
                f"<title>{esc(label)}: {value:.3g}</title></rect>"
            )
        elif value is not None:
            body.append(f'<text x="{frame.left + 4}" y="{y + 8}" dy="0.32em">0 (exact)</text>')
        if limit is not None and (limit > 0 or not log):
            px = _r(frame.x(limit))
            body.append(f'<line x1="{px}" x2="{px}" y1="{y - 3}" y2="{y + 19}" stroke="{INK}" stroke-width="2">')
            body.append(f"<title>limit {limit:g}</title></line>")
    return document(width, height, title, body)


def grouped_bars(
    categories: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
    width: int = 880,
    height: int = 280,
) -> str:
    """Vertical bars: one cluster per category, one bar per group (a metric), value labels."""
    if not categories or not groups:
        return document(width, 60, title, [f'<text x="10" y="30">{esc(title)}: no data</text>'])
    frame = Frame(width, height, (0, len(categories)), y_range)
    body = frame.axes([], nice_ticks(*y_range, 5), "", y_label)
    slot = (frame.x(1) - frame.x(0)) * 0.8
    bar = slot / len(groups)
    for ci, cat in enumerate(categories):
        left = frame.x(ci) + (frame.x(1) - frame.x(0)) * 0.1
        cx = (frame.x(ci) + frame.x(ci + 1)) / 2
        body.append(f'<text x="{_r(cx)}" y="{frame.height - frame.bottom + 16}" text-anchor="middle">{esc(cat)}</text>')
        for gi, (gname, values) in enumerate(groups):
            v = values[ci]
            if v is None:
                continue
            x = left + gi * bar
            y = frame.y(min(max(v, y_range[0]), y_range[1]))
            body.append(
                f'<rect x="{_r(x + 1)}" y="{_r(y)}" width="{_r(bar - 2)}" height="{_r(frame.y(y_range[0]) - y)}" '
                f'fill="{color(gi)}"><title>{esc(cat)} {esc(gname)}: {v:.4g}</title></rect>'
            )
            body.append(f'<text x="{_r(x + bar / 2)}" y="{_r(y - 3)}" text-anchor="middle">{v:.3f}</text>')
    body += legend([(g, color(i)) for i, (g, _) in enumerate(groups)], frame.left, 12)
    return document(width, height, title, body)


def integer_ticks(n: int, most: int = 10) -> list[int]:
    """Ticks 1..n on a count axis (runs), at most ``most`` of them, always whole numbers."""
    if n <= 0:
        return []
    step = max(1, math.ceil(n / most))
    ticks = list(range(1, n + 1, step))
    if ticks[-1] != n and n - ticks[-1] >= step / 2:
        ticks.append(n)
    return ticks
