"""Whether a variant is measurably faster than its base.

The p50s the chain produces are measured minutes apart, while the converter and the validator
load the same two cores, from 0.5 to 2 s of measuring each: their differences are mostly load.
So once the chain has settled, the platform is started again with only the registry and the
benchmarker (no validation triggered by a new benchmark), and each model's base and converted
variants are measured back to back: the base, the variants, then the base again. Each variant is
judged by the benchmarker's own comparison (`inferlab compare`: two-sided Mann-Whitney U on the
per-inference latencies, Holm-corrected, and a practical threshold on the gap between medians)
against each of the two base runs that bracket it; it is faster only when both say so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.contracts.benchmark import BenchmarkConfig, ComparisonReport
from shared.contracts.identity import BASE_VARIANT, format_ref

ALPHA = 0.05  # significance level of the Holm-corrected Mann-Whitney test
MIN_EFFECT = 0.05  # medians at least 5% apart (whichever is slower), else no practical difference
# Longer than the chain's measuring (0.5 to 2 s), still short enough for 30 models; the
# benchmarker's own stability rule (last three windows within 10%) is kept.
CONFIG = BenchmarkConfig(warmup_s=0.2, window_s=0.3, min_duration_s=1.0, max_duration_s=4.0)
# The comparison reads accepted runs only (stable, at least 30 inferences): on a shared machine
# a run is measured again, up to this many times in all, until one is accepted.
ATTEMPTS = 3
MIN_SAMPLES = 30


class NotCompared(Exception):
    """The back-to-back runs could not be compared (a run failed or was not accepted)."""


@dataclass(frozen=True)
class SpeedCheck:
    """One comparison of a variant's run with one of the base runs that bracket it."""

    ratio: float  # median latency of the variant / median latency of the base
    p_adjusted: float
    significant: bool  # the benchmarker's verdict: p_adjusted < alpha and medians >= min_effect apart

    @property
    def faster(self) -> bool:
        return self.significant and self.ratio < 1.0

    @property
    def slower(self) -> bool:
        return self.significant and self.ratio > 1.0


def faster(checks: list[SpeedCheck]) -> bool:
    """Faster only when every back-to-back comparison (one per bracketing base run) says so."""
    return bool(checks) and all(c.faster for c in checks)


def speed_check(report: ComparisonReport, base_run: str, variant_run: str) -> SpeedCheck:
    """The pair (base, variant) of a two-ref comparison, as variant against base. The
    comparison takes each ref's newest *accepted* run: when that is not the run just measured
    (an unstable run, too few samples) the pair is not a back-to-back measurement."""
    runs = {e.run_id for e in report.entries}
    if runs != {base_run, variant_run}:
        raise NotCompared("a back-to-back run was not accepted by the benchmarker (unstable or too few samples)")
    if len(report.pairs) != 1:
        raise NotCompared(f"expected one pair, the comparison has {len(report.pairs)}")
    pair = report.pairs[0]
    medians = {e.run_id: e.median_ms for e in report.entries}
    ratio = medians[variant_run] / medians[base_run] if medians[base_run] > 0 else float("inf")
    return SpeedCheck(ratio=ratio, p_adjusted=pair.p_adjusted, significant=pair.significant)


async def _measure(client: Any, ref: str) -> tuple[str, str]:
    """Benchmark ``ref`` with CONFIG: its run id and configuration key."""
    from shared.clients.benchmark import BenchmarkFailedError

    for _ in range(ATTEMPTS):
        try:
            result = await client.benchmark(ref, CONFIG, timeout=300)
        except (BenchmarkFailedError, TimeoutError) as exc:
            raise NotCompared(f"benchmark of {ref} failed: {exc}") from exc
        if len(result.results) != 1:
            raise NotCompared(f"benchmark of {ref} measured {len(result.results)} configurations, expected one")
        run = result.results[0]
        if run.stable and run.latency.samples >= MIN_SAMPLES:
            return run.run_id, run.config_key
    raise NotCompared(f"no stable run of {ref} in {ATTEMPTS} attempts (the machine is loaded)")


async def _compare(client: Any, base: tuple[str, str, str], variant: tuple[str, str, str]) -> SpeedCheck:
    from shared.errors import InferlabError

    (base_ref, base_run, key), (variant_ref, variant_run, _) = base, variant
    try:
        report = await client.compare([base_ref, variant_ref], config_key=key, alpha=ALPHA, min_effect=MIN_EFFECT)
    except (InferlabError, TimeoutError) as exc:
        raise NotCompared(f"compare failed: {exc}") from exc
    return speed_check(report, base_run, variant_run)


async def measure_model(client: Any, name: str, version: str, variants: list[str]) -> dict[str, list[SpeedCheck] | str]:
    """Per variant: its two checks (against the base run before and the one after), or why
    it could not be compared."""
    base_ref = format_ref(name, version, BASE_VARIANT)
    out: dict[str, list[SpeedCheck] | str] = {}
    try:
        first = (base_ref, *await _measure(client, base_ref))
    except NotCompared as exc:
        return dict.fromkeys(variants, str(exc))
    measured: dict[str, tuple[str, str, str]] = {}
    for variant in variants:
        ref = format_ref(name, version, variant)
        try:
            measured[variant] = (ref, *await _measure(client, ref))
            out[variant] = [await _compare(client, first, measured[variant])]
        except NotCompared as exc:
            out[variant] = str(exc)
    if not measured:
        return out
    try:
        second = (base_ref, *await _measure(client, base_ref))
    except NotCompared as exc:
        return {v: str(exc) if isinstance(c, list) else c for v, c in out.items()}
    for variant, run in measured.items():
        checks = out[variant]
        if not isinstance(checks, list):
            continue
        try:
            checks.append(await _compare(client, second, run))
        except NotCompared as exc:
            out[variant] = str(exc)
    return out


async def measure_all(
    client: Any, version: str, plan: dict[str, list[str]], say: Callable[[str], None]
) -> dict[str, dict[str, list[SpeedCheck] | str]]:
    """``plan``: model name -> the variants to compare with its base."""
    results = {}
    for name, variants in plan.items():
        results[name] = await measure_model(client, name, version, variants)
        say(
            f"speed {name}: "
            + ", ".join(
                f"{v} {'/'.join(f'{c.ratio:.2f}x' for c in r) if isinstance(r, list) else r}"
                for v, r in results[name].items()
            )
        )
    return results
