"""Structural checks: the model runs on seeded inputs, its outputs are finite and of the
declared shapes, and two runs on the same inputs give bit-identical outputs.

Shape rule: every declared output has the declared rank; fixed dimensions match; a named
dynamic dimension that also names an input dimension (``batch``, ``N``) has that input's
size. Shapes are read on one call of the size the model accepts (``call_rows``), never on
outputs joined over several calls. A real shape that disagrees with the declared one is a
warning with the figures, not a failure: exporters often declare output shapes loosely and
such models run fine in production. Batch consistency (sample 0 alone vs. inside the batch)
is reported as a figure, not judged: kernels legitimately pick different accumulation orders
per batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.contracts.registry import TensorSpec

RunFn = Callable[[dict[str, np.ndarray]], dict[str, Any]]


@dataclass
class StructuralResult:
    passed: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples: int = 0
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    deterministic: bool | None = None
    max_run_difference: float | None = None
    batch_consistency_max_abs: float | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "outputs": self.outputs,
            "deterministic": self.deterministic,
            "max_run_difference": self.max_run_difference,
            "batch_consistency_max_abs": self.batch_consistency_max_abs,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def _shape_problems(name: str, value: Any, spec: TensorSpec | None, dims: dict[str, int], n: int) -> list[str]:
    if spec is None:
        return []
    if not spec.is_tensor:
        if isinstance(value, list) and len(value) != n:
            return [f"output {name!r} holds {len(value)} items for {n} samples"]
        return []
    if not isinstance(value, np.ndarray):
        return [f"output {name!r} is declared a tensor but came back as {type(value).__name__}"]
    if spec.shape is None:
        return []
    if value.ndim != len(spec.shape):
        return [f"output {name!r} has shape {list(value.shape)}, declared {spec.shape}"]
    problems = []
    for axis, (declared, actual) in enumerate(zip(spec.shape, value.shape, strict=True)):
        if isinstance(declared, int) and declared > 0 and declared != actual:
            problems.append(f"output {name!r} dimension {axis} is {actual}, declared {declared}")
        elif isinstance(declared, str) and declared in dims and dims[declared] != actual:
            problems.append(
                f"output {name!r} dimension {axis} ({declared!r}) is {actual}, but input dimension "
                f"{declared!r} is {dims[declared]}"
            )
    return problems


def _input_dims(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for spec in specs:
        value = feeds.get(spec.name)
        if value is None or spec.shape is None:
            continue
        for declared, actual in zip(spec.shape, np.shape(value), strict=False):
            if isinstance(declared, str):
                dims.setdefault(declared, int(actual))
    return dims


def _first_rows(feeds: dict[str, np.ndarray], n: int, rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` samples of ``feeds``: inputs that hold the ``n`` samples are cut,
    the others (a recurrent state [2, 1, 128] beside [n, 576] audio, a scalar) stay whole."""
    return {k: v[:rows] if np.ndim(v) and len(v) == n else v for k, v in feeds.items()}


def _max_difference(a: Any, b: Any) -> float:
    """0.0 when bit-identical (NaN equal to NaN); the largest absolute difference otherwise
    (inf when the values cannot be compared numerically)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return float("inf")
        if a.dtype.kind in "fc":
            if np.array_equal(a, b, equal_nan=True):
                return 0.0
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            diff = diff[np.isfinite(diff)]
            return float(diff.max()) if diff.size else float("inf")
        return 0.0 if np.array_equal(a, b) else float("inf")
    return 0.0 if a == b else float("inf")


def check_structure(
    run: RunFn,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    feeds: dict[str, np.ndarray],
    *,
    call_rows: int | None = None,
    batched: bool = True,
) -> StructuralResult:
    """Run ``feeds`` twice through ``run`` and judge the outputs against ``outputs``.
    ``call_rows``: the rows of one call the model accepts (shapes are judged on such a
    call); ``batched=False``: ``feeds`` is one call of a model without a batch axis."""
    first_value = next(iter(feeds.values()), None) if feeds else None
    n = len(first_value) if batched and first_value is not None and np.ndim(first_value) else (1 if feeds else 0)
    result = StructuralResult(passed=False, samples=n)
    try:
        first = run(feeds)
    except Exception as exc:
        result.problems.append(f"does not run on seeded inputs: {exc}")
        return result
    specs = {s.name: s for s in outputs}
    for name in specs:
        if name not in first:
            result.problems.append(f"declared output {name!r} is missing")
    for name, value in first.items():
        result.outputs[name] = _output_figures(name, value, result.problems)
    one_call, one_feeds, rows = first, feeds, n
    if batched and call_rows is not None and 0 < call_rows < n:
        one_feeds, rows = _first_rows(feeds, n, call_rows), call_rows
        try:
            one_call = run(one_feeds)
        except Exception as exc:
            result.problems.append(f"runs on {n} samples but not on one call of {call_rows}: {exc}")
            return result
    dims = _input_dims(inputs, one_feeds if batched else feeds)
    for name, value in one_call.items():
        result.warnings.extend(_shape_problems(name, value, specs.get(name), dims, rows if batched else 1))
    try:
        second = run(feeds)
    except Exception as exc:
        result.problems.append(f"a second run on the same inputs failed: {exc}")
        return result
    worst = max((_max_difference(first[k], second.get(k)) for k in first), default=0.0)
    result.deterministic = worst == 0.0
    result.max_run_difference = worst
    if not result.deterministic:
        result.problems.append(f"two runs on the same inputs differ (largest difference {worst:.3g})")
    if batched and n > 1:
        _batch_consistency(run, feeds, first, n, result)
    result.passed = not result.problems
    return result


def _output_figures(name: str, value: Any, problems: list[str]) -> dict[str, Any]:
    """Shape, dtype and non-finite count of one output; non-finite values go to ``problems``."""
    figures: dict[str, Any] = {}
    if isinstance(value, np.ndarray):
        figures["shape"] = list(value.shape)
        figures["dtype"] = str(value.dtype)
        if value.dtype.kind in "fc":
            nonfinite = int((~np.isfinite(value)).sum())
            figures["nonfinite"] = nonfinite
            if nonfinite:
                nan = int(np.isnan(value).sum())
                problems.append(
                    f"output {name!r} has {nonfinite} non-finite values ({nan} NaN, {nonfinite - nan} inf) "
                    f"of {value.size}"
                )
    elif isinstance(value, list):
        figures["items"] = len(value)
        bad = sum(
            1
            for item in value
            if isinstance(item, dict) and not all(np.isfinite(v) for v in item.values() if isinstance(v, float))
        )
        if bad:
            problems.append(f"output {name!r} has {bad} items with non-finite values")
    return figures


def _batch_consistency(
    run: RunFn, feeds: dict[str, np.ndarray], first: dict[str, Any], n: int, result: StructuralResult
) -> None:
    """Sample 0 alone against inside the batch: a figure, not judged (kernels pick other
    accumulation orders per batch size); failing to run alone is a problem."""
    try:
        alone = run(_first_rows(feeds, n, 1))
        diffs = [
            _max_difference(first[k][:1], alone[k])
            for k in first
            if isinstance(first[k], np.ndarray) and first[k].ndim > 0 and first[k].shape[0] == n
        ]
        result.batch_consistency_max_abs = max(diffs, default=0.0)
    except Exception as exc:
        result.problems.append(f"runs in a batch of {n} but not alone: {exc}")
