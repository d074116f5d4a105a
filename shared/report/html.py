"""The model report as one self-contained HTML page: inline CSS, inline SVG plots, no script,
no external URL, so it opens offline and can be mailed or attached to a ticket as it is."""

from __future__ import annotations

import math
from typing import Any

from shared.contracts.registry import TensorSpec
from shared.contracts.validation import CriterionResult
from shared.report import svg
from shared.report.data import (
    ModelReport,
    VariantReport,
    check,
    format_number,
    mcnemar,
    metric_change,
    noise_curve,
    parity_rows,
)
from shared.report.svg import esc, integer_ticks

CSS = """
:root{--ink:#222;--muted:#666;--line:#ddd;--pass:#00734f;--fail:#b23c00;--unk:#8a6d00}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);margin:0;background:#fafafa}
main{max-width:1000px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6rem;margin:0 0 4px} h2{font-size:1.2rem;margin:34px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px} h3{font-size:1rem;margin:18px 0 6px}
p,li{line-height:1.45} .muted{color:var(--muted)} .small{font-size:.85rem}
table{border-collapse:collapse;margin:8px 0;font-size:.88rem;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:700;font-size:.9rem;color:#fff}
.ready{background:var(--pass)} .notready{background:var(--fail)} .unknown{background:var(--unk)}
.pass{color:var(--pass);font-weight:600} .fail{color:var(--fail);font-weight:600} .unk{color:var(--unk);font-weight:600}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:4px 18px;margin:10px 0;
font-size:.9rem}
.note{background:#fff7e0;border-left:4px solid #e0b000;padding:6px 10px;margin:8px 0;font-size:.9rem}
figure{margin:10px 0} figcaption{font-size:.85rem;color:var(--muted)}
code{font-size:.88em;background:#f3f3f3;padding:0 3px;border-radius:3px}
nav a{margin-right:12px;font-size:.9rem}
@media print{body{background:#fff} main{padding:0}}
"""

SECTIONS = (
    ("readiness", "Readiness"),
    ("latency", "Latency"),
    ("trend", "History"),
    ("parity", "Parity"),
    ("robustness", "Robustness"),
    ("fairness", "Fairness"),
)


def _num(v: Any, digits: int = 4) -> str:
    return esc(format_number(v, digits))


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(v: VariantReport) -> str:
    if v.validation is not None:
        words = esc(v.validation.verdict_words)
        return f'<span class="pass">{words}</span>' if v.validation.ready else f'<span class="fail">{words}</span>'
    if v.validation_error is not None:
        return f'<span class="unk">could not validate ({esc(v.validation_error.reason)})</span>'
    return '<span class="muted">not validated</span>'


def _mark(passed: bool | None) -> str:
    if passed is None:
        return '<span class="unk" title="not measured">?</span>'
    return '<span class="pass">✓</span>' if passed else '<span class="fail">✗</span>'


def _measured(c: CriterionResult) -> str:
    if c.measured is None:
        return "n/a"
    if c.metric in ("structural", "parity", "fairness"):
        return "passed" if c.measured >= 1 else "failed"
    return f"{c.measured:.4g}"


def _limit(c: CriterionResult) -> str:
    if c.metric in ("structural", "parity", "fairness") and c.op == ">=" and c.limit == 1:
        return "passes"
    return f"{esc(c.op)} {c.limit:g}"


def _shape(shape: list[int | str | None] | None) -> str:
    # Non-tensor values (skl2onnx's ZipMap ``seq(map(int64,float32))``) carry no shape: the type
    # as written says it all.
    return "" if shape is None else esc(str(list(shape)))


def _header(report: ModelReport) -> str:
    r = report.record
    s = report.subject
    if s.validation is not None:
        badge = f'<span class="badge {"ready" if s.validation.ready else "notready"}">'
        badge += esc(s.validation.verdict_words) + "</span>"
    else:
        badge = '<span class="badge unknown">NOT VALIDATED</span>'

    def io(specs: list[TensorSpec]) -> str:
        return ", ".join(f"{esc(spec.name)} {esc(spec.dtype)}{_shape(spec.shape)}" for spec in specs)

    facts = [
        ("task", r.task or "?"),
        ("size", f"{r.size_bytes:,} bytes"),
        ("parameters", f"{r.parameter_count:,}"),
        ("opset", ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in r.opset.items())),
        ("inputs", io(r.inputs)),
        ("outputs", io(r.outputs)),
        ("dataset", r.dataset_uri or "none"),
        ("parent", r.parent or "none (base)"),
        ("sha256", r.sha256[:16] + "…"),
    ]
    facts_html = "".join(
        f"<div><span class='muted'>{esc(k)}</span> {esc(v) if k not in ('inputs', 'outputs') else v}</div>"
        for k, v in facts
    )
    asked = "" if report.requested == report.ref else f" <span class='muted'>(asked as {esc(report.requested)})</span>"
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in SECTIONS)
    notes = "".join(f'<div class="note">{esc(n)}</div>' for n in report.notes)
    return (
        f"<h1>{esc(report.ref)} {badge}</h1>"
        f"<p class='muted small'>inferlab model report{asked}, generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC"
        f"{' · ' + esc(r.metadata.get('description')) if isinstance(r.metadata.get('description'), str) else ''}</p>"
        f"<nav>{nav}</nav><div class='facts'>{facts_html}</div>{notes}"
    )


def _variants_table(report: ModelReport) -> str:
    rows = []
    for v in report.variants:
        run = v.run or {}
        rows.append(
            [
                f"<b>{esc(v.ref)}</b>" if v.ref == report.ref else esc(v.ref),
                esc(v.variant),
                f"{v.size_bytes / 1024:,.1f} KiB" if v.size_bytes else "",
                _num(run.get("p50_ms")),
                _num(run.get("p99_ms")),
                _num(run.get("throughput_ips")),
                _num(v.validation.accuracy) if v.validation else "",
                _verdict(v),
            ]
        )
    return _table(
        ["variant ref", "variant", "size", "p50 ms", "p99 ms", "inf/s", "accuracy", "readiness"], rows, {2, 3, 4, 5, 6}
    )


def _readiness(report: ModelReport) -> str:
    s = report.subject
    out = ["<h2 id='readiness'>Readiness</h2>", _variants_table(report)]
    if s.validation_error is not None:
        errored = s.validation_error
        out.append(
            f"<p class='fail'>The latest validation of {esc(s.ref)} could not run ({esc(errored.reason)}): "
            f"{esc(errored.message)}</p>"
        )
    if s.validation is None:
        out.append(f"<p class='muted'>{esc(s.ref)} has not been validated yet: no checklist to show.</p>")
        return "".join(out)
    rep = s.validation.report
    out.append(
        f"<h3>Checklist of {esc(s.ref)}</h3><p class='small muted'>{rep.samples:,} samples of "
        f"{esc(rep.dataset_uri or 'no dataset')}; validated {s.validation.occurred_at:%Y-%m-%d %H:%M:%S} UTC in "
        f"{rep.duration_s:.2f} s (trigger {esc(rep.trigger or '?')})</p>"
    )
    rows = [
        [_mark(c.passed), esc(c.metric), _measured(c), _limit(c), esc(c.source), esc(c.message)] for c in rep.criteria
    ]
    out.append(_table(["", "requirement", "measured", "limit", "source", "note"], rows, {2}))
    status = {"passed": "pass", "failed": "fail"}
    rows = [
        [f"<span class='{status.get(c.status, 'unk')}'>{esc(c.status)}</span>", esc(c.name), esc(c.summary)]
        for c in rep.checks
    ]
    out.append("<h3>Checks</h3>" + _table(["status", "check", "summary"], rows))
    if rep.recommendations:
        out.append(
            "<h3>Recommendations</h3><ol>" + "".join(f"<li>{esc(r)}</li>" for r in rep.recommendations) + "</ol>"
        )
    return "".join(out)


def _latency(report: ModelReport) -> str:
    out = ["<h2 id='latency'>Latency distribution per variant</h2>"]
    measured = [v for v in report.variants if v.histogram is not None and v.run is not None]
    if not measured:
        return out[0] + "<p class='muted'>No benchmark run in the history for these variants yet.</p>"
    items, markers, rows = [], [], []
    for i, v in enumerate(measured):
        h = v.histogram
        assert h is not None and v.run is not None
        total = max(1, h.total)
        items.append((v.variant, h.edges_ms, [c / total for c in h.counts]))
        markers += [
            (i, v.run["p50_ms"], f"{v.variant} p50 {v.run['p50_ms']:.4g} ms"),
            (i, v.run["p99_ms"], f"{v.variant} p99 {v.run['p99_ms']:.4g} ms"),
        ]
        rows.append(
            [
                esc(v.variant),
                esc(v.run["config_key"]),
                _num(v.run["samples"]),
                _num(v.run["p50_ms"]),
                _num(v.run["p90_ms"]),
                _num(v.run["p99_ms"]),
                _num(v.run["mean_ms"]),
                _num(v.run["throughput_ips"]),
                "yes" if v.run.get("stable") else "<span class='fail'>no</span>",
                f"{h.below:,} / {h.above:,}",
            ]
        )
    chart = svg.step_histograms(
        items,
        title="latency distribution per variant",
        x_label="latency per inference (ms, log scale)",
        y_label="share of samples",
        markers=markers,
    )
    keys = sorted({v.run["config_key"] for v in measured if v.run})
    cpu = next((v.run.get("cpu_model") for v in measured if v.run and v.run.get("cpu_model")), "")
    out.append(
        f"<figure>{chart}<figcaption>Raw latencies of each variant's latest run on {esc(', '.join(keys))}"
        f"{' (' + esc(cpu) + ')' if cpu else ''}, from <code>latency_samples</code>; ticks under the axis mark "
        "p50 and p99. The plotted range holds 99% of the pooled samples; the last column counts those below / "
        "above it.</figcaption></figure>"
    )
    out.append(
        _table(
            ["variant", "config", "samples", "p50 ms", "p90 ms", "p99 ms", "mean ms", "inf/s", "stable", "tails"],
            rows,
            {2, 3, 4, 5, 6, 7},
        )
    )
    return "".join(out)


def _trend(report: ModelReport) -> str:
    out = ["<h2 id='trend'>History trend</h2>"]
    trend = report.trend
    if trend is None or not trend.points:
        return out[0] + f"<p class='muted'>{esc(report.trend_note or 'No runs in the history yet.')}</p>"
    p50 = [(i + 1.0, p.p50_ms) for i, p in enumerate(trend.points)]
    p99 = [(i + 1.0, p.p99_ms) for i, p in enumerate(trend.points)]
    marks = [svg.FAIL if p.status == "regression" else "" for p in trend.points]
    vlines = [svg.VLine(c.index + 0.5, f"{c.ratio:.2f}x at {c.version}") for c in trend.change_points]
    chart = svg.line_chart(
        [svg.Series("p50 ms", p50, marker_colors=marks), svg.Series("p99 ms", p99, dashed=True)],
        title="benchmark history",
        x_label="run (oldest to newest)",
        y_label="latency (ms)",
        vlines=vlines,
        x_fmt=lambda v: f"{v:.0f}",
        x_ticks=[float(tick) for tick in integer_ticks(len(trend.points))],
    )
    slope = ""
    if trend.slope_per_day is not None and not trend.message:
        rel = (
            f" ({trend.relative_slope_per_day:+.2%} of the median per day)"
            if trend.relative_slope_per_day is not None
            else ""
        )
        slope = (
            f"Theil-Sen slope of {esc(trend.metric)}: {trend.slope_per_day:+.4g} ms/day{rel}, 95% CI "
            f"[{_num(trend.slope_low)}, {_num(trend.slope_high)}]: <b>{esc(trend.direction)}</b>. "
        )
    out.append(
        f"<figure>{chart}<figcaption>{len(trend.points)} run(s) of {esc(trend.ref)} on {esc(trend.config_key)} "
        f"(hardware {esc(trend.hardware_id[:12])}), all versions. Dashed red lines: change points (ruptures PELT on "
        f"log {esc(trend.metric)}); red dots: runs flagged as regressions. "
        f"{slope}{esc(trend.message)}</figcaption></figure>"
    )
    rows = [
        [
            str(i + 1),
            f"{p.started_at:%Y-%m-%d %H:%M:%S}",
            esc(p.version),
            esc(p.variant),
            _num(p.p50_ms),
            _num(p.p99_ms),
            _num(p.throughput_ips),
            esc(p.status),
            _num(p.median_ratio),
        ]
        for i, p in enumerate(trend.points[-20:], start=max(0, len(trend.points) - 20))
    ]
    out.append(
        _table(
            ["run", "started (UTC)", "version", "variant", "p50 ms", "p99 ms", "inf/s", "verdict", "ratio"],
            rows,
            {4, 5, 6, 8},
        )
    )
    if trend.change_points:
        rows = [
            [esc(c.version), f"{c.started_at:%Y-%m-%d %H:%M:%S}", _num(c.before), _num(c.after), f"{c.ratio:.3f}x"]
            for c in trend.change_points
        ]
        out.append(
            "<h3>Change points</h3>" + _table(["from version", "at (UTC)", "before", "after", "ratio"], rows, {2, 3, 4})
        )
    return "".join(out)


def _parity_figures(report: ModelReport) -> tuple[list[tuple[str, float, float | None, bool]], list[list[str]]]:
    """The error bars (label, max abs error, atol, passed) and the table rows of every
    converted variant's outputs."""
    bars: list[tuple[str, float, float | None, bool]] = []
    rows: list[list[str]] = []
    for v in report.variants:
        if v.parent is None:
            continue
        mc = mcnemar(v)
        for r in parity_rows(v):
            label = f"{v.variant} · {r['output']}"
            if r["compared"] and r["max_abs_error"] is not None:
                bars.append((label, r["max_abs_error"], r["atol"], r["passed"]))
            metric = esc(metric_change(r, "→"))
            rows.append(
                [
                    esc(v.variant),
                    esc(r["output"]),
                    _num(r["max_abs_error"]),
                    ""
                    if r["atol"] is None
                    else f"atol {r['atol']:g}" + ("" if r["rtol"] is None else f", rtol {r['rtol']:g}"),
                    _num(r["cosine"], 6),
                    _num(r["top1"]),
                    metric,
                    _num(mc.get("p_value")) if mc else "",
                    _mark(r["passed"])
                    + (
                        f" <span class='small muted'>{esc(', '.join(r['failed']) or r['note'])}</span>"
                        if (r["failed"] or r["note"])
                        else ""
                    ),
                ]
            )
        if v.lineage is None or v.lineage.report is None:
            rows.append(
                [
                    esc(v.variant),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    _num(mc.get("p_value")) if mc else "",
                    "<span class='muted'>no conversion report (registered by hand)</span>",
                ]
            )
    return bars, rows


def _parity(report: ModelReport) -> str:
    out = ["<h2 id='parity'>Parity of each variant with its parent</h2>"]
    bars, rows = _parity_figures(report)
    if not rows:
        return out[0] + "<p class='muted'>No converted variants of this version.</p>"
    if bars:
        chart = svg.bar_rows(
            bars,
            title="largest absolute error per output",
            x_label="max |variant - parent| (log scale); black tick: the absolute tolerance",
        )
        out.append(
            f"<figure>{chart}<figcaption>The converter's parity check on identical inputs, before registration "
            "(green: within tolerance, red: not). int8 variants have no element-wise bound: they are judged by cosine, "
            "top-1 agreement and metric drop.</figcaption></figure>"
        )
    out.append(
        _table(
            [
                "variant",
                "output",
                "max abs error",
                "tolerance",
                "cosine",
                "top-1 agreement",
                "metric",
                "McNemar p",
                "passed",
            ],
            rows,
            {2, 4, 5, 7},
        )
    )
    out.append(
        "<p class='small muted'>McNemar p: the validator's exact test of per-sample correctness, variant against "
        "parent, on the labelled dataset.</p>"
    )
    return "".join(out)


def _robustness(report: ModelReport) -> str:
    out = ["<h2 id='robustness'>Robustness</h2>"]
    series, reference, notes = [], None, []
    for v in report.variants:
        curve = noise_curve(v.validation)
        if curve:
            series.append(svg.Series(v.variant, curve))
            fig = check(v.validation, "robustness").figures
            reference = fig.get("reference_strength", reference)
        adv = check(v.validation, "adversarial")
        if adv is not None and adv.status not in ("skipped", "error"):
            notes.append(f"<li><b>{esc(v.variant)}</b>: {esc(adv.summary)}</li>")
    if not series:
        return out[0] + "<p class='muted'>No robustness curve: validate on a labelled dataset with float inputs.</p>"
    vlines = [svg.VLine(float(reference), f"reference {reference:g}x", svg.MUTED)] if reference is not None else []
    chart = svg.line_chart(
        series,
        title="accuracy under Gaussian noise",
        x_label="noise strength (multiple of the input's standard deviation)",
        y_label="accuracy",
        y_range=(max(0.0, math.floor((min(a for se in series for _, a in se.points) - 0.05) * 10) / 10), 1.0),
        vlines=vlines,
    )
    out.append(
        f"<figure>{chart}<figcaption>Accuracy of each validated variant as seeded Gaussian noise of rising "
        "strength is added to its inputs.</figcaption></figure>"
    )
    if notes:
        out.append("<h3>Adversarial (black-box, L-infinity)</h3><ul>" + "".join(notes) + "</ul>")
    return "".join(out)


def _fairness(report: ModelReport) -> str:
    out = ["<h2 id='fairness'>Fairness per group</h2>"]
    s = report.subject
    outcome = check(s.validation, "fairness")
    if outcome is None or outcome.status in ("skipped", "error"):
        why = outcome.summary if outcome is not None else "the dataset has no groups (add a `groups` array to the .npz)"
        return out[0] + f"<p class='muted'>No fairness figures for {esc(s.ref)}: {esc(why)}</p>"
    f = outcome.figures
    per_group: dict[str, dict[str, Any]] = f.get("per_group", {})
    groups = sorted(per_group)
    metrics = [("accuracy", "accuracy"), ("tpr", "true-positive rate"), ("selection_rate", "selection rate")]
    present = [(k, label) for k, label in metrics if any(per_group[g].get(k) is not None for g in groups)]
    chart = svg.grouped_bars(
        groups,
        [(label, [per_group[g].get(k) for g in groups]) for k, label in present],
        title=f"per-group figures of {s.ref}",
        y_label="rate",
    )
    verdict = (
        "<span class='fail'>disparity detected</span>"
        if f.get("detected")
        else "<span class='pass'>no significant disparity</span>"
    )
    out.append(
        f"<figure>{chart}<figcaption>{verdict}: equalized-odds difference {_num(f.get('eo_difference'))} "
        f"(limit {_num(f.get('max_gap'))}), demographic-parity difference {_num(f.get('dp_difference'))}, "
        f"worst group <b>{esc(f.get('worst_group'))}</b> (accuracy {_num(f.get('worst_group_accuracy'))}); "
        f"chi-square test of group vs correctness p = {_num(f.get('p_value'))} "
        f"(alpha {_num(f.get('alpha'))}).</figcaption></figure>"
    )
    rows = [
        [
            esc(g),
            _num(per_group[g].get("n")),
            _num(per_group[g].get("accuracy")),
            _num(per_group[g].get("tpr")),
            _num(per_group[g].get("fpr")),
            _num(per_group[g].get("selection_rate")),
        ]
        for g in groups
    ]
    out.append(_table(["group", "n", "accuracy", "TPR", "FPR", "selection rate"], rows, {1, 2, 3, 4, 5}))
    return "".join(out)


def render_html(report: ModelReport) -> str:
    body = "".join(
        [
            _header(report),
            _readiness(report),
            _latency(report),
            _trend(report),
            _parity(report),
            _robustness(report),
            _fairness(report),
            "<p class='small muted' style='margin-top:40px'>Sources: the registry (record, lineage), the converter's "
            "parity reports, the benchmarker's DuckDB history (<code>benchmark_runs</code>, "
            "<code>latency_samples</code>, "
            "trend analysis) and the validator's latest <code>model.validated</code> events. Made by "
            "<code>inferlab report REF --html FILE</code>.</p>",
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(report.ref)} · inferlab report</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
