"""What a model report shows, gathered from the running platform, and the pure reductions
behind its plots.

Sources (each optional: a missing one becomes a note on the page, never an error):

- the registry: the record and its lineage (every variant of the same version, each with
  the converter's parity report, ``Client.lineage``);
- the validator: the latest ``model.validated`` of each variant (``Client.report``): checks,
  readiness criteria, robustness curve, fairness per group;
- the benchmarker: the latest run of each variant on one shared configuration and the raw
  latencies of those runs as a log-spaced histogram, both through the read-only SQL endpoint
  (``latency_samples`` never leaves the benchmarker whole), and the trend of the model's runs
  across versions with change points (``Client.trend``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.clients.conversion import LineageNode
from shared.contracts.benchmark import TrendReport
from shared.contracts.identity import BASE_VARIANT, ModelRef
from shared.contracts.registry import ModelRecord
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.errors import InferlabError

# Histogram resolution in SQL: 100 bins per e-fold of latency (each bin 1% wider than the
# last), fine enough for microsecond models; display bins are merged from these.
BINS_PER_E = 100
DISPLAY_BINS = 60
# The plotted range covers the pooled samples between these quantiles; the rest are counted
# as tails so that one 10 ms hiccup does not squash a 5 us distribution into one pixel.
TAIL_QUANTILE = 0.005

RUN_COLUMNS = (
    "run_id",
    "ref",
    "variant",
    "config_key",
    "provider",
    "batch_size",
    "intra_op_threads",
    "concurrency",
    "hardware_id",
    "cpu_model",
    "samples",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "throughput_ips",
    "stable",
    "status",
    "started_at",
)


class Histogram(msgspec.Struct, kw_only=True):
    """Counts over shared bin edges (milliseconds, log-spaced); ``below``/``above`` count the
    samples outside the plotted range."""

    edges_ms: list[float]
    counts: list[int]
    below: int = 0
    above: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts) + self.below + self.above


class VariantReport(msgspec.Struct, kw_only=True):
    ref: str
    variant: str
    size_bytes: int = 0
    parent: str | None = None
    profile: str | None = None
    lineage: LineageNode | None = None
    validation: ModelValidated | None = None
    validation_error: ValidationErrored | None = None
    run: dict[str, Any] | None = None
    histogram: Histogram | None = None


class ModelReport(msgspec.Struct, kw_only=True):
    ref: str  # the exact reference the report is about
    requested: str  # what the user typed (an alias, a bare name)
    record: ModelRecord
    generated_at: datetime
    variants: list[VariantReport]  # base first, then the lineage in order
    trend: TrendReport | None = None
    trend_note: str = ""
    notes: list[str] = []

    @property
    def subject(self) -> VariantReport:
        return next(v for v in self.variants if v.ref == self.ref)


# --- pure reductions ------------------------------------------------------------------------


def format_number(v: Any, digits: int = 4) -> str:
    """A figure as both renderers print it: integers with separators, floats to ``digits``
    significant digits (large ones whole), booleans as yes/no, None as nothing."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def lightest_config(keys: list[str]) -> str | None:
    """The configuration key with the smallest batch x concurrency, then fewest threads:
    the one every variant is most likely to share (``PROVIDER|b1|t1|c1``)."""

    def cost(key: str) -> tuple[int, int, str]:
        parts = dict((p[0], p[1:]) for p in key.split("|")[1:] if p[:1] in "btc" and p[1:].isdigit())
        b, t, c = (int(parts.get(k, 1 << 30)) for k in "btc")
        return (b * c, t, key)

    return min(keys, key=cost) if keys else None


def choose_runs(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One run per variant, newest first in ``rows``: the latest on the configuration and
    hardware shared by most variants (the lightest such), so their latencies compare; a
    variant without it gets its own latest lightest run."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    if not by_variant:
        return {}
    share: dict[tuple[str, str], int] = {}
    for runs in by_variant.values():
        for pair in {(r["config_key"], r["hardware_id"]) for r in runs}:
            share[pair] = share.get(pair, 0) + 1
    most = max(share.values())
    key = lightest_config([k for (k, _), n in share.items() if n == most])
    hardware = next(h for (k, h), n in share.items() if k == key and n == most)
    chosen = {}
    for variant, runs in by_variant.items():
        same = [r for r in runs if r["config_key"] == key and r["hardware_id"] == hardware]
        if same:
            chosen[variant] = same[0]
        else:
            own = lightest_config([r["config_key"] for r in runs])
            chosen[variant] = next(r for r in runs if r["config_key"] == own)
    return chosen


def histograms(bins: dict[str, dict[int, int]], *, display_bins: int = DISPLAY_BINS) -> dict[str, Histogram]:
    """Shared display histograms from per-run counts over ``floor(ln(latency_ns) * BINS_PER_E)``.

    The plotted range spans the pooled samples from the ``TAIL_QUANTILE`` to the
    1 - ``TAIL_QUANTILE`` quantile (by bin), split into at most ``display_bins`` equal
    log-width bins; samples outside are counted in ``below`` / ``above``."""
    pooled: dict[int, int] = {}
    for counts in bins.values():
        for b, n in counts.items():
            pooled[b] = pooled.get(b, 0) + n
    total = sum(pooled.values())
    if total == 0:
        return {}
    ordered = sorted(pooled)
    low_target, high_target = TAIL_QUANTILE * total, (1 - TAIL_QUANTILE) * total
    seen, lo, hi = 0, ordered[0], ordered[-1]
    for b in ordered:
        if seen <= low_target:
            lo = b
        seen += pooled[b]
        if seen >= high_target:
            hi = b
            break
    span = hi - lo + 1
    width = max(1, math.ceil(span / display_bins))
    n_bins = math.ceil(span / width)
    edges = [math.exp((lo + i * width) / BINS_PER_E) / 1e6 for i in range(n_bins + 1)]
    out = {}
    for key, counts in bins.items():
        hist = [0] * n_bins
        below = above = 0
        for b, n in counts.items():
            if b < lo:
                below += n
            elif b > hi:
                above += n
            else:
                hist[min((b - lo) // width, n_bins - 1)] += n
        out[key] = Histogram(edges_ms=edges, counts=hist, below=below, above=above)
    return out


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def runs_query(name: str, version: str) -> str:
    return (
        f"SELECT {', '.join(RUN_COLUMNS)} FROM benchmark_runs "
        f"WHERE name = {_sql_text(name)} AND version = {_sql_text(version)} "
        "ORDER BY started_at DESC, run_id DESC"
    )


def histogram_query(run_ids: list[str]) -> str:
    ids = ", ".join(_sql_text(r) for r in run_ids)
    return (
        f"SELECT run_id, floor(ln(greatest(latency_ns, 1)) * {BINS_PER_E})::BIGINT AS bin, count(*) AS n "
        f"FROM latency_samples WHERE run_id IN ({ids}) GROUP BY ALL ORDER BY run_id, bin"
    )


# --- gathering ------------------------------------------------------------------------------


async def collect(client: Any, ref: str, *, trend_metric: str = "p50_ms") -> ModelReport:
    """Everything the report shows about ``ref`` and its sibling variants. Raises only when
    the registry does not know ``ref``; other sources that fail leave notes."""
    view = await client.get(ref)
    record: ModelRecord = view.record
    # registered because ONNX Runtime loads it, although onnx.checker objected
    notes: list[str] = [f"verification warning: {w}" for w in record.warnings]
    variants = await _variants(client, record, notes)
    await _add_validations(client, variants, notes)
    await _add_runs(client, record, variants, notes)
    trend, trend_note = await _trend(client, record, trend_metric)
    return ModelReport(
        ref=record.ref,
        requested=ref,
        record=record,
        generated_at=datetime.now(UTC),
        variants=variants,
        trend=trend,
        trend_note=trend_note,
        notes=notes,
    )


async def _variants(client: Any, record: ModelRecord, notes: list[str]) -> list[VariantReport]:
    """The record and its sibling variants from the lineage (the record alone when the
    lineage is unavailable)."""
    base_ref = f"{record.name}@{record.version}"
    nodes: list[LineageNode] = []
    try:
        tree = await client.lineage(base_ref)
        nodes = [node for _, node in tree.walk()]
    except InferlabError as exc:
        notes.append(f"lineage unavailable ({exc.code}): {exc.message}")
    if not any(n.ref == record.ref for n in nodes):
        nodes.append(
            LineageNode(
                ref=record.ref,
                variant=record.variant,
                format=record.format,
                size_bytes=record.size_bytes,
                sha256=record.sha256,
                parent=record.parent,
            )
        )
    return [
        VariantReport(
            ref=n.ref, variant=n.variant, size_bytes=n.size_bytes, parent=n.parent, profile=n.profile, lineage=n
        )
        for n in nodes
    ]


async def _add_validations(client: Any, variants: list[VariantReport], notes: list[str]) -> None:
    for v in variants:
        try:
            outcome = await client.report(v.ref)
        except InferlabError as exc:
            notes.append(f"validation of {v.ref} unavailable ({exc.code}): {exc.message}")
            continue
        if isinstance(outcome, ModelValidated):
            v.validation = outcome
        elif isinstance(outcome, ValidationErrored):
            v.validation_error = outcome


async def _add_runs(client: Any, record: ModelRecord, variants: list[VariantReport], notes: list[str]) -> None:
    """Each variant's chosen benchmark run and its latency histogram."""
    try:
        result = await client.sql(runs_query(record.name, record.version))
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        chosen = choose_runs(rows)
        for v in variants:
            v.run = chosen.get(v.variant)
        run_ids = [v.run["run_id"] for v in variants if v.run]
        if run_ids:
            counts = await client.sql(histogram_query(run_ids))
            bins: dict[str, dict[int, int]] = {}
            for run_id, b, n in counts.rows:
                bins.setdefault(run_id, {})[int(b)] = int(n)
            hists = histograms(bins)
            for v in variants:
                if v.run:
                    v.histogram = hists.get(v.run["run_id"])
    except InferlabError as exc:
        notes.append(f"benchmark history unavailable ({exc.code}): {exc.message}")


async def _trend(client: Any, record: ModelRecord, metric: str) -> tuple[TrendReport | None, str]:
    """The trend of ``metric`` across the versions of the record's variant, or why there is none."""
    subject = ModelRef.parse(record.ref)
    across_versions = record.name if subject.variant == BASE_VARIANT else f"{record.name}+{subject.variant}"
    try:
        trend: TrendReport = await client.trend(across_versions, metric=metric)
    except InferlabError as exc:
        return None, f"no trend for {across_versions} ({exc.code}): {exc.message}"
    return trend, ""


# --- figures the renderers share -------------------------------------------------------------


def check(validation: ModelValidated | None, name: str) -> Any:
    """The named check's outcome of a validation, or None."""
    if validation is None:
        return None
    return next((c for c in validation.report.checks if c.name == name), None)


def noise_curve(validation: ModelValidated | None) -> list[tuple[float, float]]:
    outcome = check(validation, "robustness")
    if outcome is None or outcome.status in ("skipped", "error"):
        return []
    return [(float(p["strength"]), float(p["accuracy"])) for p in outcome.figures.get("curve", [])]


def metric_change(row: dict[str, Any], arrow: str) -> str:
    """``accuracy 0.9500 -> 0.9400``: a parity row's task metric on the parent and on the
    variant; empty when it was not measured."""
    if row["metric"] and row["metric_source"] is not None and row["metric_variant"] is not None:
        return f"{row['metric']} {row['metric_source']:.4f} {arrow} {row['metric_variant']:.4f}"
    return ""


def parity_rows(v: VariantReport) -> list[dict[str, Any]]:
    """Per output of a converted variant: the converter's figures against its tolerance."""
    if v.lineage is None or v.lineage.report is None or v.lineage.report.parity is None:
        return []
    rows = []
    for o in v.lineage.report.parity.outputs:
        rows.append(
            {
                "output": o.name,
                "compared": o.compared,
                "max_abs_error": o.max_abs_error,
                "atol": o.tolerance.atol,
                "rtol": o.tolerance.rtol,
                "cosine": o.cosine_similarity,
                "min_cosine": o.tolerance.min_cosine,
                "top1": o.top1_agreement,
                "metric": o.metric,
                "metric_source": o.metric_source,
                "metric_variant": o.metric_variant,
                "passed": o.passed,
                "failed": list(o.failed),
                "note": o.note,
            }
        )
    return rows


def mcnemar(v: VariantReport) -> dict[str, Any] | None:
    outcome = check(v.validation, "parity")
    if outcome is None:
        return None
    figures = outcome.figures.get("mcnemar")
    return figures if isinstance(figures, dict) else None
