"""SDK methods of the converter (mixed into ``shared.sdk.Client``).

outcomes = await client.convert("digits@1.0.0", profiles=["fp16", "int8-dynamic"])
for o in outcomes:
    print(o.type, o.profile, getattr(o, "reason", ""))
tree = await client.lineage("digits@1.0.0")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from shared.clients.host import ClientHost
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.conversion import (
    CONVERTER_PROFILES,
    OUTCOME_TYPES,
    ConversionFailed,
    ConversionPlan,
    ConversionProgress,
    ConversionReport,
    ConversionSkipped,
    ConvertModel,
    ListProfiles,
    ModelConverted,
    ParityReport,
    ProfileList,
    Tolerance,
)
from shared.contracts.registry import ListModels, ModelRecord

if TYPE_CHECKING:
    pass

ConversionOutcome = ModelConverted | ConversionFailed | ConversionSkipped
ConversionMessage = ConversionPlan | ConversionProgress | ModelConverted | ConversionFailed | ConversionSkipped


class LineageNode(msgspec.Struct, kw_only=True):
    """One model variant in a lineage tree, with the conversion that made it."""

    ref: str
    variant: str
    format: str
    size_bytes: int
    sha256: str
    parent: str | None = None
    profile: str | None = None
    report: ConversionReport | None = None
    children: list[LineageNode] = []

    @property
    def parity(self) -> ParityReport | None:
        return self.report.parity if self.report else None

    def walk(self, depth: int = 0) -> list[tuple[int, LineageNode]]:
        out = [(depth, self)]
        for child in self.children:
            out.extend(child.walk(depth + 1))
        return out


def _report_of(record: ModelRecord) -> ConversionReport | None:
    stored = record.metadata.get("conversion") if isinstance(record.metadata, dict) else None
    if not isinstance(stored, dict):
        return None
    try:
        return msgspec.convert(stored, ConversionReport)
    except msgspec.ValidationError:
        return None


def build_lineage(root: ModelRecord, records: list[ModelRecord]) -> LineageNode:
    """The tree under ``root``: children are records whose ``parent`` is a node's ref."""
    by_parent: dict[str, list[ModelRecord]] = {}
    for record in records:
        if record.parent:
            by_parent.setdefault(record.parent, []).append(record)

    def node(record: ModelRecord, seen: frozenset[str]) -> LineageNode:
        report = _report_of(record)
        children = [
            node(child, seen | {child.ref})
            for child in sorted(by_parent.get(record.ref, []), key=lambda r: r.variant)
            if child.ref not in seen
        ]
        return LineageNode(
            ref=record.ref,
            variant=record.variant,
            format=record.format,
            size_bytes=record.size_bytes,
            sha256=record.sha256,
            parent=record.parent,
            profile=report.profile if report else record.tags.get("profile"),
            report=report,
            children=children,
        )

    return node(root, frozenset({root.ref}))


class ConversionApi(ClientHost):
    """Methods that talk to the converter."""

    async def convert(
        self,
        ref: str,
        *,
        profiles: list[str] | None = None,
        tolerance: Tolerance | dict[str, float] | None = None,
        output_tolerances: Mapping[str, Tolerance | dict[str, float]] | None = None,
        calibration: str | Path | None = None,
        target_opset: int | None = None,
        shapes: dict[str, list[int]] | None = None,
        options: dict[str, Any] | None = None,
        parity_samples: int | None = None,
        seed: int = 0,
        wait: bool = True,
        timeout: float = 900.0,
        on_progress: Callable[[ConversionMessage], None] | None = None,
    ) -> list[ConversionOutcome] | str:
        """Ask the converter to run ``profiles`` on ``ref`` (none: its default profiles).

        ``calibration`` is a local ``.npz`` (uploaded first) or a URI. With ``wait`` returns
        one outcome per profile (``ModelConverted``, ``ConversionFailed`` or
        ``ConversionSkipped``), calling ``on_progress`` with the plan, each stage and each
        outcome as they arrive; without, returns the command's id."""
        calibration_uri = None
        if calibration is not None:
            if isinstance(calibration, Path) or "://" not in str(calibration):
                calibration_uri = (await self.upload(calibration, prefix="datasets")).uri
            else:
                calibration_uri = str(calibration)
        command = ConvertModel(
            event_id=new_id(),
            ref=ref,
            profiles=list(profiles or []),
            tolerance=_tolerance(tolerance),
            output_tolerances={k: t for k, v in (output_tolerances or {}).items() if (t := _tolerance(v))},
            calibration_uri=calibration_uri,
            target_opset=target_opset,
            shapes=dict(shapes or {}),
            options=dict(options or {}),
            parity_samples=parity_samples,
            seed=seed,
        )
        if not wait:
            return await self.send(subjects.CONVERT, command)

        def until(got: list[dict[str, Any]]) -> bool:
            plan = next((g for g in got if g.get("type") == "conversion.plan"), None)
            done = sum(1 for g in got if g.get("type") in OUTCOME_TYPES)
            return plan is not None and done >= len(plan.get("profiles", []))

        def on_reply(reply: dict[str, Any]) -> None:
            if on_progress is None:
                return
            try:
                on_progress(msgspec.convert(reply, ConversionMessage))
            except msgspec.ValidationError:
                pass

        replies = await self.send_and_collect(
            subjects.CONVERT, command, timeout=timeout, until=until, on_reply=on_reply
        )
        return [msgspec.convert(r, ConversionOutcome) for r in replies if r.get("type") in OUTCOME_TYPES]

    async def lineage(self, ref: str) -> LineageNode:
        """The tree of variants derived from ``ref`` (same name and version), each with the
        profile and the conversion report (parity figures) that made it."""
        root = (await self.get(ref)).record
        listed = await self.list(ListModels(name=root.name, limit=100_000))
        records = [v.record for v in listed.models if v.record.version == root.version]
        return build_lineage(root, records)

    async def conversion_profiles(self, timeout: float = 5.0) -> ProfileList:
        """The converter's profiles and whether each can run on the converter's host."""
        return await self.bus.request(CONVERTER_PROFILES, ListProfiles(), ProfileList, timeout=timeout)


def _tolerance(value: Tolerance | dict[str, float] | None) -> Tolerance | None:
    if value is None or isinstance(value, Tolerance):
        return value
    return msgspec.convert(value, Tolerance)
