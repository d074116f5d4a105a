"""Following a new version through the platform until it has a verdict: its base and every
variant the converter makes of it, each to its end (validated, or a failure that ends it).

``Chain`` is the pure part: fed stream events of one name in order, it knows which refs it
still waits for and what each ended as. ``Client.wait_for_verdict`` (shared/sdk.py) feeds it from
``model.*.<name>`` and ``inferlab register --until ready`` prints its table.

A version is *ready* when its base is READY; variants are reported with their own verdicts (a
failed conversion is an alert of its own, not a verdict on the version). The profiles to wait
for are the converter's automatic ones (``converter_profiles``): one outcome (converted,
failed, skipped) each; a converted variant is then followed to its own verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from shared.contracts.base import type_tag
from shared.contracts.identity import BASE_VARIANT

# How a ref ended, when it ended without a validation verdict.
BENCHMARK_FAILED = "benchmark_failed"
VALIDATION_FAILED = "validation_failed"
CONVERSION_FAILED = "conversion_failed"
CONVERSION_SKIPPED = "conversion_skipped"
WAITING = "waiting"


@dataclass
class ChainRow:
    """One ref (or one profile that produced none) and where it stands."""

    ref: str
    variant: str
    stage: str = "registered"  # registered, converted, benchmarked, validated, or a failure
    verdict: str = WAITING  # ready, not_ready, not_validated_for_accuracy, a failure, waiting
    accuracy: float | None = None
    p99_ms: float | None = None
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.verdict != WAITING


@dataclass
class ChainResult:
    """What ``Client.wait_for_verdict`` returns: ``ready`` when the base is READY;
    ``complete`` False when the timeout came first (``rows`` then say what was still waiting)."""

    ref: str
    ready: bool
    verdict: str
    complete: bool
    rows: list[ChainRow] = field(default_factory=list)


@dataclass
class Chain:
    name: str
    version: str
    profiles: list[str]
    target: str = ""  # a variant's ref, to wait for that ref alone (default: the base)
    rows: dict[str, ChainRow] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # profile -> converted/failed/skipped

    def __post_init__(self) -> None:
        variant = self.target.partition("+")[2] or BASE_VARIANT
        self.rows.setdefault(self.base_ref, ChainRow(ref=self.base_ref, variant=variant))

    @property
    def base_ref(self) -> str:
        return self.target or f"{self.name}@{self.version}"

    def feed(self, message: Any) -> None:
        """Take one decoded stream message; anything of another version is ignored."""
        if getattr(message, "version", None) != self.version or getattr(message, "name", None) != self.name:
            return
        kind = type_tag(type(message)) if isinstance(message, msgspec.Struct) else ""
        ref = message.record.ref if kind == "model.registered" else getattr(message, "ref", None)
        if self.target and ref != self.target:
            return
        if kind == "model.registered":
            record = message.record
            self.rows.setdefault(record.ref, ChainRow(ref=record.ref, variant=record.variant))
        elif kind in ("model.converted", "model.conversion_failed", "model.conversion_skipped"):
            if message.source_variant != BASE_VARIANT:
                return
            self.outcomes[message.profile or getattr(message, "variant", "")] = kind
            if kind == "model.converted":
                row = self.rows.setdefault(message.ref, ChainRow(ref=message.ref, variant=message.variant))
                row.stage = "converted" if row.stage == "registered" else row.stage
            else:
                ref = f"{self.base_ref} ({message.profile})"
                verdict = CONVERSION_FAILED if kind == "model.conversion_failed" else CONVERSION_SKIPPED
                self.rows[ref] = ChainRow(
                    ref=ref,
                    variant=message.profile,
                    stage=verdict,
                    verdict=verdict,
                    detail=f"{message.reason}: {message.message}",
                )
        elif kind == "model.benchmarked":
            row = self._row(message)
            results = [r for r in message.results if getattr(r, "latency", None) is not None]
            if results:
                row.p99_ms = results[0].latency.p99_ms
            if row.verdict == WAITING:
                row.stage = "benchmarked"
        elif kind == "model.benchmark_failed":
            row = self._row(message)
            row.stage = row.verdict = BENCHMARK_FAILED
            row.detail = f"{message.reason}: {message.message}"
        elif kind == "model.validated":
            row = self._row(message)
            row.stage = "validated"
            row.verdict = message.verdict or ("ready" if message.ready else "not_ready")
            row.accuracy = message.accuracy
            unmet = [c.message for c in message.report.criteria if c.passed is not True]
            row.detail = "; ".join(unmet[:3]) or (message.report.recommendations[:1] or [""])[0]
        elif kind == "model.validation_failed":
            row = self._row(message)
            row.stage = row.verdict = VALIDATION_FAILED
            row.detail = f"{message.reason}: {message.message}"

    def _row(self, message: Any) -> ChainRow:
        return self.rows.setdefault(message.ref, ChainRow(ref=message.ref, variant=message.variant))

    @property
    def settled(self) -> bool:
        return all(p in self.outcomes for p in self.profiles) and all(r.done for r in self.rows.values())

    def result(self) -> ChainResult:
        base = self.rows[self.base_ref]
        ordered = [base, *sorted((r for r in self.rows.values() if r is not base), key=lambda r: r.ref)]
        return ChainResult(
            ref=self.base_ref,
            ready=base.verdict == "ready",
            verdict=base.verdict,
            complete=self.settled,
            rows=ordered,
        )
