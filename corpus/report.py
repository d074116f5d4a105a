"""docs/corpus.md from the corpus outcomes: one row per model, then the totals."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from corpus import speed
from corpus.follow import CONVERTED, INPUTS, NOT_APPLICABLE, PARITY_LOSS, TOOL, Conversion, Outcome, Variant
from corpus.model import CorpusModel


@dataclass(frozen=True)
class Totals:
    models: int
    ort_runs: int
    registered: int
    base_benchmarked: int
    base_validated: int
    base_ready: int
    conversions: Counter[str]
    float_models: int
    smaller: int  # float models with a variant at most 0.9x the base's size
    faster: int  # float models with a variant measured significantly faster (corpus/speed.py)
    improved: int  # float models with a faster or smaller variant: the union

    @property
    def improved_share(self) -> float:
        return self.improved / self.float_models if self.float_models else 0.0


SMALLER = 0.9  # a variant at most this fraction of the base's size is smaller


def _converted(outcome: Outcome) -> list[tuple[str, Conversion]]:
    return [(p, c) for p, c in outcome.conversions.items() if c.status == CONVERTED]


def smaller(outcome: Outcome) -> bool:
    """A converted variant at most 0.9x the base's size."""
    return any(
        c.size_after and c.size_before and c.size_after <= SMALLER * c.size_before for _, c in _converted(outcome)
    )


def faster(outcome: Outcome) -> bool:
    """A converted variant that the benchmarker's comparison, measured back to back, finds
    significantly faster than the base by more than its practical threshold, against both
    base runs that bracket it. A lower p50 alone is not enough: on a shared machine it is load."""
    return any((v := outcome.variants.get(p)) is not None and speed.faster(v.speed) for p, _ in _converted(outcome))


def improved(outcome: Outcome) -> bool:
    """Smaller or faster: the issue's figure."""
    return smaller(outcome) or faster(outcome)


def totals(
    models: list[CorpusModel], outcomes: dict[str, Outcome], float_compute: dict[str, bool], ort: dict[str, str]
) -> Totals:
    counts: Counter[str] = Counter()
    for o in outcomes.values():
        for conv in o.conversions.values():
            counts[conv.status] += 1
    bases = [o.variants.get("base") for o in outcomes.values()]
    floaty = [m.name for m in models if float_compute.get(m.name)]
    return Totals(
        models=len(models),
        ort_runs=sum(1 for m in models if not ort.get(m.name)),
        registered=sum(1 for o in outcomes.values() if o.registered),
        base_benchmarked=sum(1 for b in bases if b and b.benchmarked and not b.benchmark_error),
        base_validated=sum(1 for b in bases if b and b.validated and not b.validation_error),
        base_ready=sum(1 for b in bases if b and b.ready),
        conversions=counts,
        float_models=len(floaty),
        smaller=sum(1 for n in floaty if smaller(outcomes[n])),
        faster=sum(1 for n in floaty if faster(outcomes[n])),
        improved=sum(1 for n in floaty if improved(outcomes[n])),
    )


def _verdict(v: Variant | None) -> str:
    if v is None:
        return "-"
    if v.benchmark_error:
        return f"benchmark failed: {_short(v.benchmark_error)}"
    if v.validation_error:
        return f"not validated: {_short(v.validation_error)}"
    if v.ready is None:
        return "pending"
    verdict = "READY" if v.ready else "NOT READY"
    if v.failed_criteria:
        verdict += f" ({', '.join(v.failed_criteria)})"
    return verdict


_LOAD_PREFIX = re.compile(r"Load model from \S+ failed:\s*")


def _short(text: str, n: int = 200) -> str:
    # ONNX Runtime's load errors start with the scratch path, which says nothing
    text = _LOAD_PREFIX.sub("", " ".join(text.split())).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _profile_cell(o: Outcome, profile: str) -> str:
    conv = o.conversions.get(profile)
    if conv is None:
        return "-"
    if conv.status == CONVERTED:
        size = ""
        if conv.size_before and conv.size_after:
            size = f"; {conv.size_after / conv.size_before:.2f}x size"
        variant = o.variants.get(profile)
        p50 = f"; p50 {variant.p50_ms:.3f} ms" if variant and variant.p50_ms else ""
        return f"converted ({conv.parity}{size}{p50}{_speed(variant)})"
    detail = f" ({conv.parity})" if conv.parity else ""
    return f"{conv.status}{detail}: {_short(conv.message)}"


def _speed(v: Variant | None) -> str:
    """The back-to-back comparison with the base: the variant's median over the base's, once
    per bracketing base run, and what the benchmarker concluded."""
    if v is None:
        return ""
    if v.speed_error:
        return f"; speed not compared: {_short(v.speed_error, 120)}"
    if not v.speed:
        return ""
    ratios = "/".join(f"{c.ratio:.2f}x" for c in v.speed)
    if speed.faster(v.speed):
        verdict = "faster"
    elif all(c.slower for c in v.speed):
        verdict = "slower"
    else:
        verdict = "no significant difference"
    return f"; vs base {ratios}: {verdict}"


def render(
    models: list[CorpusModel],
    outcomes: dict[str, Outcome],
    profiles: list[str],
    float_compute: dict[str, bool],
    ort: dict[str, str],
    skipped: dict[str, str],
    *,
    header: str,
) -> str:
    t = totals(models, outcomes, float_compute, ort)
    lines = [header, ""]
    c = t.conversions
    lines += [
        "## Totals",
        "",
        f"- models: {t.models} from {len({m.package for m in models})} pip packages; "
        f"ONNX Runtime CPU loads {t.ort_runs}",
        f"- registered: {t.registered}/{t.models}; base benchmarked {t.base_benchmarked}; "
        f"base validated {t.base_validated} (READY {t.base_ready})",
        f"- conversions ({len(profiles)} profiles x {t.registered} registered = {t.registered * len(profiles)}): "
        f"converted {c[CONVERTED]}, not applicable {c[NOT_APPLICABLE]}, parity loss {c[PARITY_LOSS]}, "
        f"input synthesis {c[INPUTS]}, tool failures {c[TOOL]}",
        f"- models with float compute that got a faster or smaller variant: {t.improved}/{t.float_models} "
        f"({t.improved_share:.0%}); smaller (<= {SMALLER}x size): {t.smaller}; "
        f"measured faster (back to back, p < {speed.ALPHA}, medians >= {speed.MIN_EFFECT:.0%} apart): {t.faster}",
        "",
    ]
    if skipped:
        lines += ["Sources skipped (package not installed):", ""]
        lines += [f"- {pkg}: {why}" for pkg, why in sorted(skipped.items())]
        lines.append("")
    lines += [
        "## Per model",
        "",
        "| model | package | ORT CPU | registered | base p50 ms | " + " | ".join(profiles) + " | base verdict |",
        "|" + "---|" * (6 + len(profiles)),
    ]
    for m in models:
        o = outcomes[m.name]
        base = o.variants.get("base")
        registered = "yes" if o.registered else (f"REJECTED {_short(o.rejected)}" if o.rejected else "no outcome")
        if o.warnings:
            registered += f" ({len(o.warnings)} checker warning{'s' if len(o.warnings) > 1 else ''})"
        p50 = f"{base.p50_ms:.3f}" if base and base.p50_ms else "-"
        cells = [
            f"`{m.name}`",
            m.package,
            "loads" if not ort.get(m.name) else f"fails: {_short(ort[m.name], 80)}",
            registered,
            p50,
            *[_profile_cell(o, p) for p in profiles],
            _verdict(base),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["## Models", ""]
    lines += [f"- `{m.name}` ({m.package}): {m.description}" for m in models]
    lines.append("")
    return "\n".join(lines)
