"""Converter messages: the explicit ``model.convert`` command, the parity report, and the
facts ``model.converted``, ``model.conversion_failed`` and ``model.conversion_skipped``.

Two reply-only messages (``conversion.plan``, ``conversion.progress``) go to a command's
``reply_to`` inbox and never into a stream: they let a waiting client show progress and know
how many outcomes to expect. ``converter.profiles`` is the converter's micro endpoint that
lists its profiles and whether each can run on the converter's own host.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.contracts.base import Command, Event, Message
from shared.contracts.identity import BASE_VARIANT

# Micro endpoint of the converter (core request/reply, outside "model.>").
CONVERTER_PROFILES = "converter.profiles"

# Machine-readable reasons of ConversionFailed.
REASON_PARITY_FAILED = "parity_failed"
REASON_NEEDS_CALIBRATION = "needs_calibration_data"
REASON_UNSUPPORTED_MODEL = "unsupported_model"
REASON_CONVERSION_ERROR = "conversion_error"
REASON_INVALID_REQUEST = "invalid_request"
REASON_UNKNOWN_PROFILE = "unknown_profile"
REASON_UNKNOWN_MODEL = "unknown_model"
REASON_INVALID_DATASET = "invalid_dataset"
REASON_ARTIFACT_ERROR = "artifact_error"
REASON_VARIANT_EXISTS = "variant_exists"
REASON_REGISTRATION_REJECTED = "registration_rejected"
# The profile's native work did not return (shared/sandbox.py): the runtime crashed (signal,
# step, input shapes in the message), ran past its time limit, or past its memory limit.
REASON_CRASHED = "crashed"
REASON_TIMED_OUT = "timed_out"
REASON_OUT_OF_MEMORY = "out_of_memory"
# Reasons of ConversionSkipped (not failures, no alert).
REASON_UNAVAILABLE_ON_HOST = "unavailable_on_host"
REASON_NOT_APPLICABLE = "not_applicable"
# ConversionFailed without an alert: nothing known runs the model; the user must say how it is
# fed (``inferlab register --shape/--sample``). An outcome for its owner, not an incident.
REASON_NEEDS_INPUT_SPEC = "needs_input_spec"


class Tolerance(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Pass criteria for one output (Polygraphy semantics for atol/rtol: an element passes
    when ``|a - b| <= atol + rtol * |b|``, ``b`` the source's value). Unset criteria are not
    checked.

    ``min_top1_agreement`` applies to classifier scores (argmax per row) and to integer label
    outputs (share of equal labels). ``max_metric_drop`` applies when the input set carries
    labels: for accuracy the largest allowed absolute drop, for RMSE (regressors) the largest
    allowed relative increase.
    """

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_metric_drop: float | None = None


class ConvertModel(Command, kw_only=True, tag="model.convert"):
    """``model.convert``: run ``profiles`` on ``ref`` (empty: the configured defaults).

    ``tolerance`` overrides the profile defaults for every output; ``output_tolerances``
    per output name. ``calibration_uri`` names an ``.npz`` for int8-static. ``shapes`` fixes
    dynamic input dimensions for parity inputs and TensorRT profiles (``{"input": [8, 3, 224,
    224]}``). ``options`` carries profile-specific settings (e.g. ``{"ort-opt": {"level":
    "extended"}}``). ``target_opset`` adds the profile ``opset-<N>``. ``parity_samples``
    caps the samples of the parity check (default: the converter's setting).
    """

    ref: str
    profiles: list[str] = []
    tolerance: Tolerance | None = None
    output_tolerances: dict[str, Tolerance] = {}
    calibration_uri: str | None = None
    target_opset: int | None = None
    shapes: dict[str, list[int]] = {}
    options: dict[str, Any] = {}
    parity_samples: int | None = None
    seed: int = 0


class OutputParity(msgspec.Struct, kw_only=True):
    """Figures of one output. ``failed`` names the criteria that did not hold."""

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
    dtype: str = ""
    elements: int = 0
    compared: bool = True
    metric: str | None = None  # "accuracy" or "rmse", when the input set has labels
    metric_source: float | None = None
    metric_variant: float | None = None
    failed: list[str] = []


class ParityReport(msgspec.Struct, kw_only=True):
    passed: bool
    input_source: str  # "dataset", "calibration" or "synthetic"
    samples: int
    seed: int = 0
    outputs: list[OutputParity] = []
    batches: int = 0
    shapes: dict[str, list[int]] = {}
    calibration_source: str | None = None
    calibration_samples: int = 0
    note: str = ""


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
    variant: str = ""
    format: str = "onnx"
    # Idempotency key: sha256 over source sha256, profile, options, tolerances and input set.
    key: str = ""
    conversion_s: float = 0.0
    parity_s: float = 0.0
    details: dict[str, Any] = {}
    tool_versions: dict[str, str] = {}


class ModelConverted(Event, kw_only=True, tag="model.converted"):
    """``model.converted.<name>``: a variant passed parity and was registered as ``ref``."""

    name: str
    version: str
    source_variant: str = BASE_VARIANT
    variant: str
    ref: str
    report: ConversionReport
    profile: str = ""
    sha256: str = ""
    artifact_uri: str = ""


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
    host without a GPU: ``unavailable_on_host``) or has nothing to do on this model
    (``not_applicable``, e.g. int8 quantisation of a graph without MatMul/Gemm/Conv). Not a
    failure; no alert."""

    name: str
    version: str
    source_variant: str = BASE_VARIANT
    profile: str
    reason: str
    message: str


ConversionOutcome = ModelConverted | ConversionFailed | ConversionSkipped
OUTCOME_TYPES = ("model.converted", "model.conversion_failed", "model.conversion_skipped")


class ConversionPlan(Message, kw_only=True, tag="conversion.plan"):
    """Reply-only: the profiles the converter will run for a command, in order; one outcome
    per profile follows."""

    ref: str
    profiles: list[str]


class ConversionProgress(Message, kw_only=True, tag="conversion.progress"):
    """Reply-only: one profile entered a stage (``fetching``, ``converting``, ``parity``,
    ``registering``)."""

    ref: str
    profile: str
    stage: str


class ListProfiles(msgspec.Struct, kw_only=True):
    pass


class ProfileInfo(msgspec.Struct, kw_only=True):
    id: str
    description: str
    precision: str
    output_format: str = "onnx"
    available: bool
    reason: str = ""
    default_tolerance: Tolerance = msgspec.field(default_factory=Tolerance)
    needs_calibration: bool = False


class ProfileList(msgspec.Struct, kw_only=True):
    host: str
    profiles: list[ProfileInfo]
    default_profiles: list[str] = []
