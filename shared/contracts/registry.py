"""Registry messages: the registration command, its facts, and the request/reply bodies of the
registry's NATS micro endpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from shared.contracts.base import Command, Event, utcnow
from shared.contracts.identity import BASE_VARIANT


class RejectionReason(StrEnum):
    INVALID_NAME = "invalid_name"
    INVALID_VERSION = "invalid_version"
    INVALID_VARIANT = "invalid_variant"
    INVALID_URI = "invalid_uri"
    IMPORT_NOT_ALLOWED = "import_not_allowed"
    ARTIFACT_NOT_FOUND = "artifact_not_found"
    FETCH_FAILED = "fetch_failed"
    TOO_LARGE = "too_large"
    SHA256_MISMATCH = "sha256_mismatch"
    NOT_ONNX = "not_onnx"
    INVALID_MODEL = "invalid_model"
    SHAPE_INFERENCE_FAILED = "shape_inference_failed"
    EXTERNAL_DATA_ESCAPE = "external_data_escape"
    EXTERNAL_DATA_MISSING = "external_data_missing"
    VERSION_EXISTS = "version_exists"
    UNKNOWN_PARENT = "unknown_parent"
    INVALID_DATASET = "invalid_dataset"
    INVALID_COMMAND = "invalid_command"
    UNSUPPORTED_FORMAT = "unsupported_format"
    # Verification ran in a sandbox worker that did not answer (shared/sandbox.py).
    RUNTIME_CRASHED = "runtime_crashed"
    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"


# Artifact formats. "tensorrt-engine" is a serialized TensorRT engine made by the converter from
# an ONNX parent: it cannot be parsed without a GPU, so it is registered with its parent's I/O.
FORMAT_ONNX = "onnx"
FORMAT_TENSORRT = "tensorrt-engine"
FORMATS = (FORMAT_ONNX, FORMAT_TENSORRT)


class TensorSpec(msgspec.Struct, kw_only=True):
    """One graph input or output. ``shape`` holds ints for fixed dimensions and strings for
    named dynamic ones (``"batch"``); ``None`` for an unnamed dynamic dimension. ``dtype`` is a
    numpy-style name (``float32``); non-tensor types read as e.g. ``seq(map(int64,float32))``."""

    name: str
    dtype: str
    shape: list[int | str | None] | None = None

    @property
    def is_tensor(self) -> bool:
        return not self.dtype.startswith(("seq(", "map(", "opt("))


class InputSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How one input is fed, as the user says it (``inferlab register --shape/--shapes/--range``).

    ``shape`` fixes every dimension; ``min_shape``/``opt_shape``/``max_shape`` give a range as
    trtexec's ``--minShapes/--optShapes/--maxShapes`` do (inputs are synthesised at
    ``opt_shape``; a leading dimension that differs between min and max is the batch).
    ``low``/``high`` bound the values of an integer input, both inclusive (token ids:
    ``low=0, high=vocab-1``); for a float input they bound uniform synthetic values."""

    name: str
    shape: list[int] | None = None
    min_shape: list[int] | None = None
    opt_shape: list[int] | None = None
    max_shape: list[int] | None = None
    low: float | None = None
    high: float | None = None


class ResolvedInput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One input as the platform feeds it, found once at registration (shared/inputs.py):
    ``shape`` ran in ONNX Runtime with ``batch_axis`` (when the model has a real batch) set
    to 1. Synthetic values lie in [``low``, ``high``] (inclusive for integers). ``source``:
    ``spec``, ``sample``, ``dataset`` or ``search`` (sizes tried until one ran)."""

    name: str
    dtype: str
    shape: list[int]
    batch_axis: int | None = None
    low: float | None = None
    high: float | None = None
    source: str = "search"


# ``ModelRecord.input_status`` values.
INPUTS_RESOLVED = "resolved"
INPUTS_NEED_SPEC = "needs_input_spec"


class RegisterModel(Command, kw_only=True, tag="model.register"):
    """``model.register``: register a model version from any pipeline.

    ``artifact_uri`` is ``nats-obj://<bucket>/<object>`` (already stored),
    ``upload://<id>?size=<bytes>&sha256=<hex>`` (staged by the pipeline on ``upload.<id>``),
    ``file:///...`` (under an allow-listed import root) or ``http(s)://...`` (a public host, or
    one in ``INFERLAB_FETCH_HOSTS``). ``sha256`` is optional; when
    given the artifact must hash to it. ``parent`` (a reference) and ``variant`` record lineage
    for derived models.
    """

    name: str
    version: str
    artifact_uri: str
    variant: str = BASE_VARIANT
    task: str | None = None
    metadata: dict[str, Any] = {}
    dataset_uri: str | None = None
    parent: str | None = None
    tags: dict[str, str] = {}
    sha256: str | None = None
    format: str = FORMAT_ONNX
    # How the model is fed (optional): per-input shapes and value ranges, and an .npz of
    # inputs only (no labels) uploaded like a dataset. A dataset's inputs serve as well.
    input_specs: list[InputSpec] = []
    sample_uri: str | None = None


class ModelRecord(msgspec.Struct, kw_only=True):
    """What the registry knows of one (name, version, variant). Immutable except ``tags``."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    sha256: str
    size_bytes: int
    artifact_uri: str
    source_uri: str
    # sha256 of the bytes the client sent, when storing changed them (external data inlined).
    source_sha256: str = ""
    format: str = FORMAT_ONNX
    task: str | None = None
    framework: str | None = None
    framework_version: str | None = None
    ir_version: int = 0
    opset: dict[str, int] = {}
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    parameter_count: int = 0
    # onnx.checker's findings on a model registered because ONNX Runtime loads it
    warnings: list[str] = []
    tags: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    dataset_uri: str | None = None
    parent: str | None = None
    input_specs: list[InputSpec] = []
    sample_uri: str | None = None
    # The inputs that ran at registration (shared/inputs.py), used by every later step;
    # ``input_status`` is ``resolved``, ``needs_input_spec`` (``input_message`` says which
    # input and dimension, and the fix) or "" (not resolved: engines, older records).
    resolved_inputs: list[ResolvedInput] = []
    input_status: str = ""
    input_message: str = ""
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)
    correlation_id: str = ""
    # Event id of the model.registered fact; reused when a crash forces a re-announcement, so
    # JetStream's duplicate window swallows the second copy.
    registered_event_id: str = ""
    announced: bool = False
    # Set by ``model.archive``: kept (artifacts, history, exact refs resolve) but out of
    # listings, ``find`` and "newest version" resolution.
    archived_at: datetime | None = None


class ModelSignals(msgspec.Struct, kw_only=True):
    """The latest benchmark and validation figures other services published for a variant;
    the registry keeps them to rank ``find`` results."""

    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    peak_memory_bytes: int | None = None
    benchmarked_at: datetime | None = None
    accuracy: float | None = None
    ready: bool | None = None
    validated_at: datetime | None = None


class ModelRegistered(Event, kw_only=True, tag="model.registered"):
    """``model.registered.<name>``: a version was verified and stored (announced once)."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    sha256: str
    record: ModelRecord


class ModelRejected(Event, kw_only=True, tag="model.rejected"):
    """``model.rejected.<name>`` (``model.rejected._`` when the name itself is invalid)."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    sha256: str = ""
    artifact_uri: str = ""
    reason: RejectionReason
    message: str


class AliasSet(Event, kw_only=True, tag="model.alias_set"):
    """``model.alias_set.<name>``: an alias now points at ``version`` (``previous`` before)."""

    name: str
    alias: str
    version: str
    previous: str | None = None


class AliasRemoved(Event, kw_only=True, tag="model.alias_removed"):
    """``model.alias_removed.<name>``."""

    name: str
    alias: str
    version: str


class TagsSet(Event, kw_only=True, tag="model.tags_set"):
    """``model.tags_set.<name>``: tags of one version/variant changed."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    tags: dict[str, str]
    removed: list[str] = []


class ArchiveModel(Command, kw_only=True, tag="model.archive"):
    """``model.archive``: retire a version (base and variants) without destroying anything.
    Refused while an alias points at it. Not grantable to pipelines (docs/reliability.md)."""

    name: str
    version: str


class DeleteModel(Command, kw_only=True, tag="model.delete"):
    """``model.delete``: remove a version's records (base and variants) and the stored objects
    (model, dataset, sample) no other record uses. The benchmark history is kept unless
    ``purge_history``. Refused while an alias points at it. Only the registry deletes objects,
    and pipelines may not send this command (docs/reliability.md)."""

    name: str
    version: str
    purge_history: bool = False


class ModelArchived(Event, kw_only=True, tag="model.archived"):
    """``model.archived.<name>``: a version and its variants were archived."""

    name: str
    version: str
    variants: list[str]


class ModelDeleted(Event, kw_only=True, tag="model.deleted"):
    """``model.deleted.<name>``: a version's records are gone; ``objects_deleted`` lists the
    stored objects removed, ``objects_kept`` those another record still uses. With
    ``purge_history`` the benchmarker deletes the version's history rows on this fact."""

    name: str
    version: str
    variants: list[str]
    objects_deleted: list[str] = []
    objects_kept: list[str] = []
    purge_history: bool = False


class LifecycleRefused(Event, kw_only=True, tag="model.lifecycle_refused"):
    """``model.lifecycle_refused.<name>``: an archive or delete that cannot be done as asked;
    ``reason`` is machine-readable (``unknown_model``, ``alias_in_use``)."""

    name: str
    version: str
    action: str
    reason: str
    message: str


# --- request/reply bodies of the registry micro endpoints (core NATS, not streamed) ---


class GetModel(msgspec.Struct, kw_only=True):
    ref: str


class ModelView(msgspec.Struct, kw_only=True):
    """A record as the read endpoints return it: with the aliases pointing at its version and
    the latest published benchmark/validation figures."""

    record: ModelRecord
    aliases: list[str] = []
    signals: ModelSignals | None = None


class ListModels(msgspec.Struct, kw_only=True):
    """Filters combine with AND; each ``any_of`` entry is an alternative group (OR of ANDs).

    ``tag`` entries read ``key`` (present) or ``key=value``.
    """

    name: str | None = None
    task: str | None = None
    variant: str | None = None
    alias: str | None = None
    tags: list[str] = []
    any_of: list[ListModels] = []
    limit: int = 1000
    # Archived versions are listed only when asked for.
    include_archived: bool = False


class ModelList(msgspec.Struct, kw_only=True):
    models: list[ModelView]
    total: int


class FindModels(msgspec.Struct, kw_only=True):
    """Requirements for ``find``; unset ones do not constrain. Ranked by the documented score
    (docs/architecture.md): meeting requirements first, then accuracy, p99 latency, size."""

    name: str | None = None
    task: str | None = None
    max_p99_ms: float | None = None
    min_accuracy: float | None = None
    max_size_bytes: int | None = None
    min_throughput_ips: float | None = None
    require_ready: bool = False
    input_shapes: dict[str, list[int]] = {}
    limit: int = 20


class RankedModel(msgspec.Struct, kw_only=True):
    view: ModelView
    score: float
    unknown: list[str] = []
    why: str = ""


class FoundModels(msgspec.Struct, kw_only=True):
    results: list[RankedModel]


class SetAlias(msgspec.Struct, kw_only=True):
    name: str
    alias: str
    version: str
    correlation_id: str = ""


class RemoveAlias(msgspec.Struct, kw_only=True):
    name: str
    alias: str
    correlation_id: str = ""


class AliasChange(msgspec.Struct, kw_only=True):
    name: str
    alias: str
    version: str | None
    previous: str | None = None


class SetTags(msgspec.Struct, kw_only=True):
    ref: str
    tags: dict[str, str] = {}
    remove: list[str] = []
    correlation_id: str = ""


class PutDataset(msgspec.Struct, kw_only=True):
    """Store a named dataset (``dataset://<name>``) from ``uri``: a staged upload
    (``upload://``) or any URI the registry may fetch. Only services write the object store."""

    name: str
    uri: str
    correlation_id: str = ""


class DatasetStored(msgspec.Struct, kw_only=True):
    name: str
    uri: str
    object_uri: str
    sha256: str
    size_bytes: int


class Resolve(msgspec.Struct, kw_only=True):
    ref: str


class Resolved(msgspec.Struct, kw_only=True):
    ref: str
    name: str
    version: str
    variant: str
    sha256: str
    artifact_uri: str
    size_bytes: int


class ErrorReply(msgspec.Struct, kw_only=True):
    """Body of an endpoint error (also sent as the micro ``Nats-Service-Error`` headers)."""

    code: str
    message: str
