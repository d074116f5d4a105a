"""Listing and ranking, as pure functions over the registry index.

``find`` score (documented in docs/architecture.md): candidates must meet every requirement
whose figure is known; a requirement whose figure is not known yet (no benchmark or
validation published) does not exclude a model but is listed in ``unknown`` and costs 0.1.
Among candidates, ``score = 0.5 * accuracy + 0.3 * speed + 0.2 * compactness``, each term
min-max normalised over the candidates (1 = best; a missing figure scores 0), so that a model
measured to be accurate and fast outranks one that is only small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.registry.store import Index, Key
from shared.contracts.identity import version_key
from shared.contracts.registry import (
    FindModels,
    ListModels,
    ModelRecord,
    ModelSignals,
    ModelView,
    RankedModel,
    TensorSpec,
)


def view_of(index: Index, key: Key) -> ModelView:
    record = index.records[key]
    return ModelView(
        record=record,
        aliases=index.aliases_of(record.name, record.version),
        signals=index.signals.get(key),
    )


def _tag_matches(tags: dict[str, str], expr: str) -> bool:
    key, eq, value = expr.partition("=")
    if key not in tags:
        return False
    return not eq or tags[key] == value


def _matches_all(record: ModelRecord, aliases: list[str], f: ListModels) -> bool:
    return (
        (f.name is None or record.name == f.name)
        and (f.task is None or record.task == f.task)
        and (f.variant is None or record.variant == f.variant)
        and (f.alias is None or f.alias in aliases)
        and all(_tag_matches(record.tags, t) for t in f.tags)
    )


def matches(record: ModelRecord, aliases: list[str], f: ListModels) -> bool:
    """AND of the top-level filters, and (when given) at least one ``any_of`` group."""
    if not _matches_all(record, aliases, f):
        return False
    return not f.any_of or any(matches(record, aliases, group) for group in f.any_of)


def _sort_key(record: ModelRecord) -> tuple[object, ...]:
    return (record.name, version_key(record.version), record.variant != "base", record.variant)


def list_models(index: Index, f: ListModels) -> tuple[list[ModelView], int]:
    found = []
    for key, record in index.records.items():
        if record.archived_at is not None and not f.include_archived:
            continue
        aliases = index.aliases_of(record.name, record.version)
        if matches(record, aliases, f):
            found.append(key)
    found.sort(key=lambda k: _sort_key(index.records[k]))
    return [view_of(index, k) for k in found[: max(0, f.limit)]], len(found)


def shape_compatible(inputs: list[TensorSpec], wanted: dict[str, list[int]]) -> bool:
    by_name = {s.name: s for s in inputs}
    for name, shape in wanted.items():
        spec = by_name.get(name)
        if spec is None or spec.shape is None:
            return spec is not None and spec.shape is None
        if len(spec.shape) != len(shape):
            return False
        if any(isinstance(d, int) and d != w for d, w in zip(spec.shape, shape, strict=True)):
            return False
    return True


def _check(signals: ModelSignals | None, req: FindModels) -> tuple[bool, list[str]]:
    """(meets every known requirement, names of requirements whose figure is unknown)."""
    unknown: list[str] = []
    s = signals or ModelSignals()
    checks: tuple[tuple[str, float | None, float | None, Callable[[float, float], bool]], ...] = (
        ("max_p99_ms", req.max_p99_ms, s.p99_ms, lambda have, limit: have <= limit),
        ("min_accuracy", req.min_accuracy, s.accuracy, lambda have, limit: have >= limit),
        ("min_throughput_ips", req.min_throughput_ips, s.throughput_ips, lambda have, limit: have >= limit),
    )
    for label, limit, have, ok in checks:
        if limit is None:
            continue
        if have is None:
            unknown.append(label)
        elif not ok(have, limit):
            return False, unknown
    if req.require_ready:
        if s.ready is None:
            unknown.append("ready")
        elif not s.ready:
            return False, unknown
    return True, unknown


def _normalise(values: list[float | None], *, higher_is_better: bool) -> list[float]:
    known = [v for v in values if v is not None]
    if not known:
        return [0.0 for _ in values]
    lo, hi = min(known), max(known)
    out = []
    for v in values:
        if v is None:
            out.append(0.0)
        elif hi == lo:
            out.append(1.0)
        else:
            frac = (v - lo) / (hi - lo)
            out.append(frac if higher_is_better else 1.0 - frac)
    return out


def find_models(index: Index, req: FindModels) -> list[RankedModel]:
    candidates: list[tuple[Key, list[str]]] = []
    for key, record in index.records.items():
        if record.archived_at is not None:
            continue
        if req.name is not None and record.name != req.name:
            continue
        if req.task is not None and record.task != req.task:
            continue
        if req.max_size_bytes is not None and record.size_bytes > req.max_size_bytes:
            continue
        if req.input_shapes and not shape_compatible(record.inputs, req.input_shapes):
            continue
        ok, unknown = _check(index.signals.get(key), req)
        if ok:
            candidates.append((key, unknown))
    return rank(index, candidates, req.limit)


def rank(index: Index, candidates: Iterable[tuple[Key, list[str]]], limit: int) -> list[RankedModel]:
    items = list(candidates)
    signals = [index.signals.get(k) or ModelSignals() for k, _ in items]
    accuracy = _normalise([s.accuracy for s in signals], higher_is_better=True)
    speed = _normalise([s.p99_ms for s in signals], higher_is_better=False)
    compact = _normalise([float(index.records[k].size_bytes) for k, _ in items], higher_is_better=False)
    ranked = []
    for i, (key, unknown) in enumerate(items):
        score = 0.5 * accuracy[i] + 0.3 * speed[i] + 0.2 * compact[i] - 0.1 * len(unknown)
        s = signals[i]
        why = ", ".join(
            part
            for part in (
                f"accuracy {s.accuracy:.4f}" if s.accuracy is not None else "",
                f"p99 {s.p99_ms:.3f} ms" if s.p99_ms is not None else "",
                f"{index.records[key].size_bytes} bytes",
                f"unknown: {', '.join(unknown)}" if unknown else "",
            )
            if part
        )
        ranked.append(RankedModel(view=view_of(index, key), score=round(score, 6), unknown=unknown, why=why))
    ranked.sort(key=lambda r: (-r.score, _sort_key(r.view.record)))
    return ranked[: max(0, limit)]
