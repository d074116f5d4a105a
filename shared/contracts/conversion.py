"""Converter messages: the explicit ``model.convert`` command, the parity report, and the
facts ``model.converted``, ``model.conversion_failed`` and ``model.conversion_skipped``."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.contracts.base import Command, Event
from shared.contracts.identity import BASE_VARIANT


class Tolerance(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Pass criteria for one output (Polygraphy semantics for atol/rtol: an element passes
    when ``|a - b| <= atol + rtol * |b|``). Unset criteria are not checked."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1_agreement: float | None = None


class ConvertModel(Command, kw_only=True, tag="model.convert"):
    """``model.convert``: run ``profiles`` on ``ref`` (empty: the configured defaults).

    ``tolerance`` overrides the profile defaults for every output; ``output_tolerances``
    per output name. ``calibration_uri`` names an ``.npz`` for int8-static. ``shapes`` fixes
    dynamic input dimensions for parity inputs and TensorRT profiles (``{"input": [8, 3, 224,
    224]}``). ``options`` carries profile-specific settings (e.g. ``{"ort-opt": {"level":
    "extended"}}``).
    """

    ref: str
    profiles: list[str] = []
    tolerance: Tolerance | None = None
    output_tolerances: dict[str, Tolerance] = {}
    calibration_uri: str | None = None
    target_opset: int | None = None
    shapes: dict[str, list[int]] = {}
    options: dict[str, Any] = {}


class OutputParity(msgspec.Struct, kw_only=True):
    name: str
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    mean_rel_error: float | None = None
    cosine_similarity: float | None = None
    nan_or_inf: bool = False
    top1_agreement: float | None = None
    tolerance: Tolerance = msgspec.field(default_factory=Tolerance)
    passed: bool
    note: str = ""


class ParityReport(msgspec.Struct, kw_only=True):
    passed: bool
    input_source: str  # "dataset", "calibration" or "synthetic"
    samples: int
    seed: int = 0
    outputs: list[OutputParity] = []


class ConversionReport(msgspec.Struct, kw_only=True):
    profile: str
    source_ref: str
    source_sha256: str
    variant_sha256: str | None = None
    size_before_bytes: int
    size_after_bytes: int | None = None
    duration_s: float
    parity: ParityReport | None = None
    options: dict[str, Any] = {}
    host: str = ""


class ModelConverted(Event, kw_only=True, tag="model.converted"):
    """``model.converted.<name>``: a variant passed parity and was registered as ``ref``."""

    name: str
    version: str
    source_variant: str = BASE_VARIANT
    variant: str
    ref: str
    report: ConversionReport


class ConversionFailed(Event, kw_only=True, tag="model.conversion_failed"):
    """``model.conversion_failed.<name>``: the profile failed or broke parity; nothing was
    registered. ``reason`` is machine-readable (e.g. ``parity_failed``,
    ``needs_calibration_data``, ``unsupported_model``, ``conversion_error``)."""

    name: str
    version: str
    source_variant: str = BASE_VARIANT
    profile: str
    reason: str
    message: str
    report: ConversionReport | None = None


class ConversionSkipped(Event, kw_only=True, tag="model.conversion_skipped"):
    """``model.conversion_skipped.<name>``: the profile cannot run here (e.g. TensorRT on a
    host without a GPU: ``unavailable_on_host``). Not a failure; no alert."""

    name: str
    version: str
    source_variant: str = BASE_VARIANT
    profile: str
    reason: str
    message: str
