"""The model report in the terminal: the same sections as the HTML page, as rich tables with
unicode sparklines where the page has plots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.report.data import ModelReport, check, format_number, mcnemar, metric_change, noise_curve, parity_rows

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], *, lo: float | None = None, hi: float | None = None, gaps: bool = False) -> str:
    """One character per value, ``▁`` (lowest) to ``█`` (highest); with ``gaps`` a zero (an
    empty histogram bin) is a blank."""
    if not values:
        return ""
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    span = hi - lo
    out = []
    for v in values:
        if gaps and v <= 0:
            out.append(" ")
            continue
        t = 1.0 if span <= 0 else (v - lo) / span
        out.append(BLOCKS[min(len(BLOCKS) - 1, max(0, round(t * (len(BLOCKS) - 1))))])
    return "".join(out)


_n = format_number
Print = Callable[..., None]


class _Section:
    """A bold heading line, then the table: a table's own title would wrap at the table's
    width, which for a narrow table breaks the heading over lines."""

    def __init__(self, title: str, table: Table) -> None:
        self.title, self.table = title, table

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield f"[bold]{escape(self.title)}[/]"
        yield self.table


def _table(title: str, columns: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> _Section:
    t = Table(header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i in (numeric or set()) else "left", overflow="fold")
    for r in rows:
        t.add_row(*r)
    return _Section(title, t)


def render_text(report: ModelReport, console: Console) -> None:
    """Every section after the readiness checklist (which ``inferlab report`` prints first,
    as it always has): variants, latency, history, parity, robustness, fairness."""
    p = console.print
    for note in report.notes:
        p(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _variants(report, p)
    _latency(report, p)
    _history(report, p)
    _parity(report, p)
    _robustness(report, p)
    _fairness(report, p)


def _variants(report: ModelReport, p: Print) -> None:
    """One row per variant: size, latency, accuracy and readiness."""
    rows = []
    for v in report.variants:
        run = v.run or {}
        verdict = "not validated"
        if v.validation is not None:
            verdict = (
                f"[green]{v.validation.verdict_words}[/]"
                if v.validation.ready
                else f"[bold red]{v.validation.verdict_words}[/]"
            )
        elif v.validation_error is not None:
            verdict = f"could not validate ({escape(v.validation_error.reason)})"
        rows.append(
            [
                ("[bold]" + escape(v.ref) + "[/]") if v.ref == report.ref else escape(v.ref),
                f"{v.size_bytes / 1024:,.1f} KiB" if v.size_bytes else "",
                _n(run.get("p50_ms")),
                _n(run.get("p99_ms")),
                _n(run.get("throughput_ips")),
                _n(v.validation.accuracy) if v.validation else "",
                verdict,
            ]
        )
    p(
        _table(
            "variants",
            ["variant ref", "size", "p50 ms", "p99 ms", "inf/s", "accuracy", "readiness"],
            rows,
            {1, 2, 3, 4, 5},
        )
    )


def _latency(report: ModelReport, p: Print) -> None:
    """The latency histogram of each measured variant as a sparkline."""
    measured = [v for v in report.variants if v.histogram is not None and v.run is not None]
    if measured:
        rows = []
        for v in measured:
            h, run = v.histogram, v.run
            assert h is not None and run is not None
            rows.append(
                [
                    escape(v.variant),
                    escape(run["config_key"]),
                    _n(run["samples"]),
                    _n(run["p50_ms"]),
                    _n(run["p90_ms"]),
                    _n(run["p99_ms"]),
                    sparkline([float(c) for c in h.counts], lo=0.0, gaps=True),
                ]
            )
        first_histogram = measured[0].histogram
        assert first_histogram is not None
        edges = first_histogram.edges_ms
        p(
            _table(
                f"latency distribution per variant (histogram over {edges[0]:.4g}..{edges[-1]:.4g} ms, log-spaced)",
                ["variant", "config", "samples", "p50 ms", "p90 ms", "p99 ms", "distribution"],
                rows,
                {2, 3, 4, 5},
            )
        )
    else:
        p("[dim]latency: no benchmark run in the history for these variants yet[/]")


def _history(report: ModelReport, p: Print) -> None:
    """The last runs of the trend, its change points and its Theil-Sen slope."""
    trend = report.trend
    if trend is not None and trend.points:
        changes = {c.index: c for c in trend.change_points}
        rows = []
        first = max(0, len(trend.points) - 15)
        for i, pt in enumerate(trend.points[first:], start=first):
            mark = f"◆ {changes[i].ratio:.2f}x" if i in changes else ""
            rows.append(
                [
                    str(i + 1),
                    f"{pt.started_at:%Y-%m-%d %H:%M:%S}",
                    escape(pt.version),
                    _n(pt.p50_ms),
                    _n(pt.p99_ms),
                    escape(pt.status) + (" [bold red]![/]" if pt.status == "regression" else ""),
                    mark,
                ]
            )
        p(
            _table(
                f"history of {trend.ref} on {trend.config_key}: {trend.metric} {sparkline(trend.values)}",
                ["run", "started (UTC)", "version", "p50 ms", "p99 ms", "verdict", "change point"],
                rows,
                {3, 4},
            )
        )
        if trend.message:
            p(f"  {escape(trend.message)}", highlight=False)
        elif trend.slope_per_day is not None:
            p(
                f"  Theil-Sen slope {trend.slope_per_day:+.4g} ms/day, "
                f"95% CI [{_n(trend.slope_low)}, {_n(trend.slope_high)}]: {trend.direction}. {escape(trend.message)}",
                highlight=False,
            )
    else:
        p(f"[dim]history: {escape(report.trend_note or 'no runs yet')}[/]")


def _parity(report: ModelReport, p: Print) -> None:
    """Per output of each converted variant: the parity figures against its parent."""
    rows = []
    for v in report.variants:
        if v.parent is None:
            continue
        mc = mcnemar(v)
        for r in parity_rows(v):
            metric = metric_change(r, "->")
            rows.append(
                [
                    escape(v.variant),
                    escape(r["output"]),
                    _n(r["max_abs_error"]),
                    "" if r["atol"] is None else f"{r['atol']:g}",
                    _n(r["cosine"], 6),
                    _n(r["top1"]),
                    metric,
                    _n(mc.get("p_value")) if mc else "",
                    ("[green]✓[/]" if r["passed"] else "[bold red]✗[/] " + escape(", ".join(r["failed"]))),
                ]
            )
    if rows:
        p(
            _table(
                "parity with the parent (converter; McNemar p from the validator)",
                ["variant", "output", "max abs err", "atol", "cosine", "top-1", "metric", "McNemar p", "passed"],
                rows,
                {2, 3, 4, 5, 7},
            )
        )


def _robustness(report: ModelReport, p: Print) -> None:
    """Accuracy under noise per variant, and each adversarial check's summary."""
    curves = [(v.variant, noise_curve(v.validation)) for v in report.variants]
    curves = [(name, c) for name, c in curves if c]
    if curves:
        levels = sorted({x for _, c in curves for x, _ in c})
        rows = []
        for level in levels:
            rows.append([f"{level:g}", *(_n(dict(c).get(level)) for _, c in curves)])
        rows.append(["", *(sparkline([a for _, a in c], lo=0.0, hi=1.0) for _, c in curves)])
        p(
            _table(
                "robustness: accuracy under Gaussian noise (x input std)",
                ["noise", *(n for n, _ in curves)],
                rows,
                set(range(len(curves) + 1)),
            )
        )
    adv = [(v.variant, check(v.validation, "adversarial")) for v in report.variants]
    for name, outcome in adv:
        if outcome is not None and outcome.status not in ("skipped", "error"):
            p(f"  adversarial {escape(name)}: {escape(outcome.summary)}", highlight=False)


def _fairness(report: ModelReport, p: Print) -> None:
    """Per-group figures of the subject's fairness check."""
    outcome = check(report.subject.validation, "fairness")
    if outcome is not None and outcome.status not in ("skipped", "error"):
        f = outcome.figures
        per_group = f.get("per_group", {})
        rows = [
            [
                escape(str(g)),
                _n(d.get("n")),
                _n(d.get("accuracy")),
                _n(d.get("tpr")),
                _n(d.get("fpr")),
                _n(d.get("selection_rate")),
            ]
            for g, d in sorted(per_group.items())
        ]
        verdict = "[bold red]disparity detected[/]" if f.get("detected") else "[green]no significant disparity[/]"
        p(
            _table(
                f"fairness per group of {report.ref}",
                ["group", "n", "accuracy", "TPR", "FPR", "selection rate"],
                rows,
                {1, 2, 3, 4, 5},
            )
        )
        p(
            f"  {verdict}: equalized-odds difference {_n(f.get('eo_difference'))} (limit {_n(f.get('max_gap'))}), "
            f"demographic-parity difference {_n(f.get('dp_difference'))}, chi-square p {_n(f.get('p_value'))}",
            highlight=False,
        )
