"""The model report's pure parts: the SVG kit (ticks, scales, well-formed output, escaping), the
reductions behind the plots (log histograms against numpy, the choice of comparable runs), and
the HTML and text renderers on a report whose trend comes from the benchmarker's own analysis.
The report against a live platform is exercised in tests/test_demo.py."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from rich.console import Console

from services.benchmarker.analysis import trend_report
from services.benchmarker.rows import RunRow
from shared.clients.conversion import LineageNode
from shared.contracts.conversion import ConversionReport, OutputParity, ParityReport, Tolerance
from shared.contracts.registry import ModelRecord
from shared.contracts.validation import CheckOutcome, CriterionResult, ModelValidated, ValidationReport
from shared.report import render_html, render_text, svg
from shared.report.data import (
    BINS_PER_E,
    Histogram,
    ModelReport,
    VariantReport,
    choose_runs,
    histogram_query,
    histograms,
    lightest_config,
    runs_query,
)
from shared.report.text import sparkline
from tests.test_demo import assert_self_contained


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert svg.nice_ticks(0, 1, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(0.0052, 0.0301, 5) == [0.01, 0.015, 0.02, 0.025, 0.03]
    ticks = svg.nice_ticks(-3.3, 17.9, 6)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and steps[0] in (2.5, 5.0)
    assert svg.log_ticks(0.001, 0.1) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    assert svg.log_ticks(0.001, 1) == [0.001, 0.01, 0.1, 1.0]  # many decades: decades only
    assert svg.log_ticks(0.0078, 0.03) == [0.01, 0.015, 0.02, 0.03]  # narrow: denser round mantissas
    assert svg.integer_ticks(6) == [1, 2, 3, 4, 5, 6] and svg.integer_ticks(45)[:3] == [1, 6, 11]


def test_frame_maps_linear_and_log_scales() -> None:
    frame = svg.Frame(200, 100, (1, 100), (0, 10), x_log=True, left=0, right=0, top=0, bottom=0)
    assert frame.x(1) == 0 and frame.x(100) == 200 and frame.x(10) == pytest.approx(100)
    assert frame.y(0) == 100 and frame.y(10) == 0


def test_charts_are_well_formed_svg_and_escape_text() -> None:
    charts = [
        svg.line_chart(
            [svg.Series("<p50>", [(1, 0.5), (2, 0.7)], marker_colors=["", svg.FAIL]), svg.Series("b", [(1, 0.9)])],
            title='a "title" & more',
            x_label="x",
            y_label="y",
            vlines=[svg.VLine(1.5, "2.0x at 1.1.0")],
        ),
        svg.step_histograms(
            [("base", [0.01, 0.02, 0.04], [0.25, 0.75])],
            title="h",
            x_label="ms",
            y_label="share",
            markers=[(0, 0.015, "p50")],
        ),
        svg.bar_rows([("fp16 · out", 1e-4, 1e-2, True), ("int8", 0.0, None, None)], title="parity", x_label="err"),
        svg.grouped_bars(["a", "b"], [("accuracy", [0.9, None]), ("tpr", [0.8, 0.7])], title="g", y_label="rate"),
        svg.line_chart([], title="empty", x_label="x", y_label="y"),
    ]
    for chart in charts:
        root = ET.fromstring(chart)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "&lt;p50&gt;" in charts[0] and "&quot;title&quot; &amp; more" in charts[0]
    assert svg.FAIL in charts[0]  # the flagged point is red
    assert "no data" in charts[-1]


def test_histograms_match_numpy_on_log_bins() -> None:
    rng = np.random.default_rng(0)
    a = rng.lognormal(np.log(50_000), 0.1, 20_000).astype(np.int64)  # ~50 us
    b = rng.lognormal(np.log(80_000), 0.2, 10_000).astype(np.int64)
    b[:5] = 50_000_000  # a few 50 ms hiccups: counted as tail, not stretching the plot
    bins = {}
    for key, ns in (("a", a), ("b", b)):
        idx, counts = np.unique(np.floor(np.log(ns) * BINS_PER_E).astype(np.int64), return_counts=True)
        bins[key] = dict(zip(idx.tolist(), counts.tolist(), strict=True))
    hist = histograms(bins, display_bins=40)
    for key, ns in (("a", a), ("b", b)):
        h = hist[key]
        assert h.total == len(ns)
        edges_ns = np.array(h.edges_ms) * 1e6
        # every sample inside the plotted range is counted in the bin numpy puts it in
        inside = ns[(np.floor(np.log(ns) * BINS_PER_E) >= round(np.log(edges_ns[0]) * BINS_PER_E))]
        inside = inside[np.floor(np.log(inside) * BINS_PER_E) < round(np.log(edges_ns[-1]) * BINS_PER_E)]
        expected, _ = np.histogram(np.floor(np.log(inside) * BINS_PER_E), bins=np.round(np.log(edges_ns) * BINS_PER_E))
        assert h.counts == expected.tolist()
    assert hist["b"].above >= 5 and hist["a"].edges_ms == hist["b"].edges_ms and len(hist["a"].counts) <= 40
    assert hist["a"].edges_ms[-1] < 1.0  # the 50 ms tail did not stretch the axis
    assert histograms({}) == {}


def _row(variant: str, key: str, hardware: str, started: int) -> dict:
    return {"variant": variant, "config_key": key, "hardware_id": hardware, "run_id": f"{variant}-{key}-{started}"}


def test_runs_are_chosen_on_one_shared_configuration() -> None:
    assert lightest_config(["CPU|b8|t1|c1", "CPU|b1|t2|c1", "CPU|b1|t1|c2", "CPU|b1|t1|c1"]) == "CPU|b1|t1|c1"
    rows = [  # newest first, as the query orders them
        _row("base", "CPU|b8|t1|c1", "h1", 5),
        _row("base", "CPU|b1|t1|c1", "h1", 4),
        _row("fp16", "CPU|b1|t1|c1", "h1", 3),
        _row("base", "CPU|b1|t1|c1", "h1", 2),
        _row("int8", "CPU|b8|t1|c1", "h2", 1),
    ]
    chosen = choose_runs(rows)
    assert chosen["base"]["run_id"] == "base-CPU|b1|t1|c1-4" and chosen["fp16"]["run_id"] == "fp16-CPU|b1|t1|c1-3"
    assert chosen["int8"]["run_id"] == "int8-CPU|b8|t1|c1-1"  # has no shared run: its own
    assert choose_runs([]) == {}


def test_queries_quote_their_values() -> None:
    assert "name = 'o''brien'" in runs_query("o'brien", "1.0.0")
    assert "IN ('a', 'b''c')" in histogram_query(["a", "b'c"])


def _report() -> ModelReport:
    base = "digits@1.1.0"
    fp16 = f"{base}+fp16"
    record = ModelRecord(
        name="digits",
        version="1.1.0",
        ref=base,
        sha256="ab" * 32,
        size_bytes=20_000,
        artifact_uri="nats-obj://artifacts/sha256/ab",
        source_uri="nats-obj://artifacts/sha256/ab",
        task="classification",
        metadata={"description": "<b>digits</b> & co"},
    )
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for i in range(10):
        p50 = 1.0 if i < 5 else 2.0
        rows.append(
            RunRow(
                name="digits",
                run_id=f"r{i}",
                ref=f"digits@1.{0 if i < 5 else 1}.0",
                version=f"1.{0 if i < 5 else 1}.0",
                variant="base",
                config_key="CPUExecutionProvider|b1|t1|c1",
                hardware_id="h1",
                started_at=start + timedelta(hours=i),
                p50_ms=p50 * (1 + 0.01 * (i % 2)),
                p99_ms=p50 * 2,
                throughput_ips=1000 / p50,
                samples=500,
                stable=True,
                status="regression" if i == 5 else "no_change",
                median_ratio=2.0 if i == 5 else 1.0,
                p_value=0.001,
            )
        )
    trend = trend_report("digits", "p50_ms", rows)
    assert trend.change_points, "the benchmarker's analysis finds the step"
    curve = [{"strength": s, "accuracy": a} for s, a in ((0, 0.97), (0.5, 0.9), (1.0, 0.7))]
    checks = [
        CheckOutcome(name="metrics", status="passed", summary="accuracy 0.97"),
        CheckOutcome(
            name="robustness", status="passed", summary="ok", figures={"curve": curve, "reference_strength": 0.1}
        ),
        CheckOutcome(
            name="fairness",
            status="failed",
            summary="disparity",
            figures={
                "per_group": {
                    "heavy": {"n": 300, "accuracy": 0.98, "tpr": 0.97, "fpr": 0.003, "selection_rate": None},
                    "light": {"n": 290, "accuracy": 0.90, "tpr": 0.89, "fpr": 0.01, "selection_rate": None},
                },
                "eo_difference": 0.2,
                "dp_difference": 0.05,
                "worst_group": "light",
                "worst_group_accuracy": 0.9,
                "p_value": 0.001,
                "detected": True,
                "max_gap": 0.1,
                "alpha": 0.05,
            },
        ),
    ]
    criteria = [
        CriterionResult(metric="accuracy", op=">=", limit=0.95, measured=0.97, passed=True, source="metadata"),
        CriterionResult(metric="fairness", op=">=", limit=1, measured=0, passed=False, source="default"),
        CriterionResult(metric="p99_ms", op="<=", limit=1, measured=None, passed=None, source="request"),
    ]
    validation = ModelValidated(
        name="digits",
        version="1.1.0",
        ref=base,
        ready=False,
        accuracy=0.97,
        report=ValidationReport(checks=checks, criteria=criteria, samples=590, recommendations=["collect <more> data"]),
    )
    parity = ParityReport(
        passed=True,
        input_source="dataset",
        samples=256,
        outputs=[
            OutputParity(
                name="probabilities",
                max_abs_error=4e-4,
                cosine_similarity=0.99999,
                top1_agreement=1.0,
                tolerance=Tolerance(atol=1e-2, rtol=1e-2),
                passed=True,
                metric="accuracy",
                metric_source=0.97,
                metric_variant=0.97,
            )
        ],
    )
    conversion = ConversionReport(
        profile="fp16", source_ref=base, source_sha256="ab", size_before_bytes=20_000, duration_s=1.0, parity=parity
    )
    hist = Histogram(edges_ms=[0.01, 0.02, 0.04], counts=[300, 200], below=0, above=3)
    run = {
        "run_id": "r9",
        "config_key": "CPUExecutionProvider|b1|t1|c1",
        "samples": 503,
        "p50_ms": 0.015,
        "p90_ms": 0.02,
        "p99_ms": 0.03,
        "mean_ms": 0.016,
        "throughput_ips": 60_000.0,
        "stable": True,
        "cpu_model": "AMD EPYC",
    }
    variants = [
        VariantReport(ref=base, variant="base", size_bytes=20_000, validation=validation, run=run, histogram=hist),
        VariantReport(
            ref=fp16,
            variant="fp16",
            size_bytes=12_000,
            parent=base,
            profile="fp16",
            lineage=LineageNode(
                ref=fp16, variant="fp16", format="onnx", size_bytes=12_000, sha256="cd", parent=base, report=conversion
            ),
            run={**run, "run_id": "r10", "p50_ms": 0.012},
            histogram=Histogram(edges_ms=hist.edges_ms, counts=[400, 100]),
        ),
    ]
    return ModelReport(
        ref=base,
        requested="digits@production",
        record=record,
        generated_at=start,
        variants=variants,
        trend=trend,
        notes=["validation of x unavailable (unavailable): <no answer>"],
    )


def test_html_report_is_one_self_contained_page_with_every_section() -> None:
    html = render_html(_report())
    assert_self_contained(html)
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    for anchor in ("readiness", "latency", "trend", "parity", "robustness", "fairness"):
        assert f"id='{anchor}'" in html
    svgs = re.findall(r"<svg .*?</svg>", html, re.DOTALL)
    assert len(svgs) == 5
    for fragment in svgs:
        ET.fromstring(fragment)
    # what the user typed and what it resolved to; user text is escaped everywhere
    assert "asked as digits@production" in html and "&lt;b&gt;digits&lt;/b&gt; &amp; co" in html
    assert "collect &lt;more&gt; data" in html and "&lt;no answer&gt;" in html
    assert "NOT READY" in html and "disparity detected" in html
    assert "change points" in html.lower() and "x at 1.1.0" in html  # the change point is labelled
    assert html.count(f'fill="{svg.FAIL}"') >= 1  # the regression run is marked
    assert "accuracy 0.9700 → 0.9700" in html
    assert "<title>base</title></polyline>" in html and "<title>fp16</title></polyline>" in html


def test_text_report_has_the_same_sections() -> None:
    buffer = io.StringIO()
    render_text(_report(), Console(file=buffer, width=200, no_color=True))
    out = buffer.getvalue()
    for heading in (
        "variants",
        "latency distribution per variant",
        "history of digits",
        "parity with the parent",
        "robustness: accuracy under Gaussian noise",
        "fairness per group of digits@1.1.0",
        "disparity detected",
    ):
        assert heading in out, heading
    assert "◆" in out  # the change point row
    assert "<no answer>" in out  # notes are shown, not swallowed as markup


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 5, 10], lo=0, gaps=True) == " ▅█"  # empty bins read as gaps
    assert sparkline([3, 3]) == "██" and sparkline([]) == ""


def test_html_report_renders_a_default_skl2onnx_classifier() -> None:
    # skl2onnx's default ZipMap output is seq(map(int64, float32)) with no shape at all: the
    # header shows the type as written instead of crashing on the missing shape.
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from shared.onnxmeta import graph_inputs, graph_outputs

    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    proto = to_onnx(LogisticRegression().fit(x, y), x[:1])
    outputs = graph_outputs(proto)
    assert any(o.shape is None and o.dtype.startswith("seq(map(") for o in outputs)
    report = _report()
    report.record.inputs = graph_inputs(proto)
    report.record.outputs = outputs
    html = render_html(report)
    assert_self_contained(html)
    assert "output_probability seq(map(int64,float32))" in html.replace(", ", ",")
    buffer = io.StringIO()
    render_text(report, Console(file=buffer, width=200, no_color=True))  # and the terminal one still works
    assert "variants" in buffer.getvalue()
