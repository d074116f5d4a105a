"""Default pass criteria per precision, and how a request's overrides combine with them.

The float32-equivalent profiles (graph optimisation, opset upgrade) use Polygraphy's default
``rtol = atol = 1e-5``. Reduced precision cannot meet that by design, so fp16 is judged with
looser element-wise bounds plus cosine similarity and top-1 agreement, and int8 only by
cosine, top-1 agreement and (when the input set has labels) the task metric: element-wise
error of a quantised model says little about whether it still does its job.
"""

from __future__ import annotations

import msgspec

from shared.contracts.conversion import Tolerance

FP32 = Tolerance(atol=1e-5, rtol=1e-5)
FP16 = Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999, min_top1_agreement=0.99, max_metric_drop=0.01)
INT8 = Tolerance(min_cosine=0.98, min_top1_agreement=0.95, max_metric_drop=0.02)

DEFAULTS = {"fp32": FP32, "fp16": FP16, "int8": INT8}

_FIELDS = tuple(f.name for f in msgspec.structs.fields(Tolerance))


def default_for(precision: str) -> Tolerance:
    return msgspec.structs.replace(DEFAULTS[precision])


def merge(base: Tolerance, *overrides: Tolerance | None) -> Tolerance:
    """Criteria set in a later override replace the earlier ones; unset ones are kept."""
    values = {name: getattr(base, name) for name in _FIELDS}
    for override in overrides:
        if override is None:
            continue
        for name in _FIELDS:
            value = getattr(override, name)
            if value is not None:
                values[name] = value
    return Tolerance(**values)


def for_output(
    default: Tolerance, request: Tolerance | None, per_output: dict[str, Tolerance], output: str
) -> Tolerance:
    """Profile default, then the request's tolerance for every output, then the request's
    tolerance for this output."""
    return merge(default, request, per_output.get(output))


def check_tolerance(tolerance: Tolerance) -> list[str]:
    """Problems of a requested tolerance (negative bounds, cosine or agreement outside their
    ranges); empty when it is valid."""
    problems = []
    for name in ("atol", "rtol", "max_metric_drop"):
        value = getattr(tolerance, name)
        if value is not None and not value >= 0:
            problems.append(f"{name} must be >= 0 (got {value})")
    if tolerance.min_cosine is not None and not -1.0 <= tolerance.min_cosine <= 1.0:
        problems.append(f"min_cosine must lie in [-1, 1] (got {tolerance.min_cosine})")
    if tolerance.min_top1_agreement is not None and not 0.0 <= tolerance.min_top1_agreement <= 1.0:
        problems.append(f"min_top1_agreement must lie in [0, 1] (got {tolerance.min_top1_agreement})")
    return problems
