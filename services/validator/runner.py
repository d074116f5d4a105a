"""ONNX Runtime session wrapper: batching, seeded inputs, and reading what a model's outputs
mean.

Output conventions
- Classifier: class scores are a float tensor (N, C) (probabilities or logits; the column
  order is the model's class order), or skl2onnx's ZipMap ``seq(map(label, float))``; a
  predicted-label tensor (N,) may come beside them (skl2onnx's ``label``), and when present it
  is the model's own decision (it may apply a threshold the scores do not show). Class values
  come from the graph (``classlabels_*`` attributes of ZipMap or the ai.onnx.ml classifier),
  else they are 0..C-1. ``score_output`` / ``label_output`` options name the outputs when a
  model has several candidates.
- Detector: see ``DETECTION_ADAPTERS``; ``boxes_scores_classes`` is the default layout:
  ``boxes`` (N, D, 4), ``scores`` (N, D), ``classes`` (N, D), optional ``num_detections``
  (N,), padding rows with score < 0 or class < 0. ``packed`` reads one (N, D, 6) tensor
  ``x1, y1, x2, y2, score, class``. Boxes are x1 y1 x2 y2 unless ``box_format`` says
  ``xywh`` or ``cxcywh``. Other layouts plug in with ``register_detection_adapter``.
- Regressor: a float output (N,) or (N, k).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from services.validator.errors import InferenceError, ModelLoadError, OutputError
from services.validator.metrics import Detections, encode
from shared import sandbox
from shared.contracts.registry import TensorSpec
from shared.inputs import read_facts
from shared.onnxmeta import graph_outputs, spec_from_session_arg

DEFAULT_DYNAMIC_DIM = 16
_CLASSIFIER_OPS = {"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"}
_CLASSLABEL_ATTRS = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


@dataclass(frozen=True)
class GraphFacts:
    class_labels: np.ndarray | None
    int_bounds: dict[str, int]
    # outputs as the file declares them (ONNX Runtime reports shapes merged with its own
    # inference, which would hide a declaration the graph does not honour)
    outputs: list[TensorSpec] | None = None


def read_graph_facts(path: Path) -> GraphFacts:
    """Class labels declared by classifier operators, and for integer inputs that index an
    embedding table (Gather on an initializer) the table size, so seeded token ids stay valid."""
    model = onnx.load(str(path), load_external_data=False)
    labels: np.ndarray | None = None
    zipmap_labels: np.ndarray | None = None
    for node in model.graph.node:
        if node.op_type in _CLASSIFIER_OPS or node.op_type == "ZipMap":
            for attr in node.attribute:
                if attr.name in _CLASSLABEL_ATTRS:
                    values = (
                        np.array([s.decode() for s in attr.strings])
                        if attr.name.endswith("strings")
                        else np.array(list(attr.ints), dtype=np.int64)
                    )
                    if values.size:
                        if node.op_type == "ZipMap":
                            zipmap_labels = values
                        elif labels is None:
                            labels = values
    # ids that reach a Gather (also through Cast/Unsqueeze/...) stay inside the table: the
    # same reading as the registry's resolver (shared/inputs.py)
    bounds = {f.name: f.gather_rows for f in read_facts(model) if f.gather_rows}
    return GraphFacts(
        class_labels=zipmap_labels if zipmap_labels is not None else labels,
        int_bounds=bounds,
        outputs=graph_outputs(model),
    )


class Runner:
    """One ORT session. ``run`` feeds any number of samples in batches of ``batch_size`` (or
    the model's fixed batch size, padding the last batch) and joins the outputs."""

    def __init__(
        self,
        path: Path,
        *,
        batch_size: int = 512,
        intra_op_threads: int = 0,
        providers: list[str] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises several unrelated types (Fail, InvalidGraph, ...)
            raise ModelLoadError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None
        self.path = path
        self.inputs = [spec_from_session_arg(a) for a in self.session.get_inputs()]
        self.outputs = [spec_from_session_arg(a) for a in self.session.get_outputs()]
        for arg, spec in zip(self.session.get_outputs(), self.outputs, strict=True):
            if str(arg.type).startswith(("seq(", "map(")):
                spec.dtype, spec.shape = str(arg.type).replace("tensor(float)", "float32"), None
        self.output_names = [o.name for o in self.outputs]
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        self.fixed_batch = first if isinstance(first, int) and first > 0 else None
        self.batch_size = self.fixed_batch or max(1, batch_size)
        # Inputs that do not carry the batch: scalars, and, in a fixed-batch model, inputs whose
        # leading size is fixed at another value (Silero VAD's state [2, 1, 128] beside its
        # audio [1, 576]). Each call gets them whole; slicing them by rows broke every call.
        self.whole_inputs = {s.name for s in self.inputs if self._whole(s.shape)}
        try:
            self.facts = read_graph_facts(path)
        except Exception:  # ORT loaded it; facts are a convenience
            self.facts = GraphFacts(class_labels=None, int_bounds={})

    def _whole(self, shape: list[int | str | None] | None) -> bool:
        if shape is None:
            return False
        if not shape:
            return True
        lead = shape[0]
        return self.fixed_batch is not None and isinstance(lead, int) and lead > 0 and lead != self.fixed_batch

    @property
    def declared_outputs(self) -> list[TensorSpec]:
        return self.facts.outputs if self.facts.outputs is not None else self.outputs

    @property
    def float_inputs(self) -> list[str]:
        return [s.name for s in self.inputs if s.dtype.startswith(("float", "bfloat"))]

    def prepare(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cast dataset arrays to the declared input dtypes (a float64 .npz feeding a
        float32 model is normal)."""
        out = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InferenceError(f"no data for model input {spec.name!r}")
            value = np.asarray(feeds[spec.name])
            target = _numpy_dtype(spec.dtype)
            if target is not None and value.dtype != target:
                try:
                    value = value.astype(target)
                except (TypeError, ValueError) as exc:
                    raise InferenceError(f"input {spec.name!r} cannot be cast to {spec.dtype}: {exc}") from None
            out[spec.name] = value
        return out

    def call(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """One session call on ``feeds`` as they are (a model without a batch axis: a VAD with
        its state and scalar sample rate)."""
        try:
            results = self.session.run(self.output_names, self.prepare(feeds))
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"inference failed: {_first_line(exc)}") from None
        return dict(zip(self.output_names, results, strict=True))

    def run(self, feeds: dict[str, np.ndarray], *, prepared: bool = False) -> dict[str, Any]:
        feeds = feeds if prepared else self.prepare(feeds)
        rows = [k for k in feeds if k not in self.whole_inputs] or list(feeds)
        n = len(feeds[rows[0]])
        parts: dict[str, list[Any]] = {name: [] for name in self.output_names}
        unbatched: dict[str, Any] = {}
        for start in range(0, n, self.batch_size):
            chunk = {k: v if k in self.whole_inputs else v[start : start + self.batch_size] for k, v in feeds.items()}
            size = len(chunk[rows[0]])
            if self.fixed_batch and size < self.fixed_batch:
                chunk = {k: v if k in self.whole_inputs else _pad(v, self.fixed_batch) for k, v in chunk.items()}
            try:
                results = self.session.run(self.output_names, chunk)
            except Exception as exc:
                sandbox.note_failure(exc)  # a refused allocation ends the validation as out_of_memory
                raise InferenceError(
                    f"inference failed on samples {start}..{start + size - 1}: {_first_line(exc)}"
                ) from None
            for name, value in zip(self.output_names, results, strict=True):
                if isinstance(value, list):
                    parts[name].extend(value[:size])
                elif isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == len(chunk[rows[0]]):
                    parts[name].append(value[:size])
                else:
                    unbatched.setdefault(name, value)
        out: dict[str, Any] = {}
        for name in self.output_names:
            if name in unbatched:
                out[name] = unbatched[name]
            elif parts[name] and isinstance(parts[name][0], np.ndarray):
                out[name] = np.concatenate(parts[name], axis=0)
            else:
                out[name] = parts[name]
        return out


def _pad(value: np.ndarray, size: int) -> np.ndarray:
    missing = size - len(value)
    return np.concatenate([value, np.repeat(value[-1:], missing, axis=0)], axis=0)


def _numpy_dtype(name: str) -> np.dtype | None:
    if name == "str":
        return None
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else text)[:500]


# --- seeded inputs --------------------------------------------------------------------------


def seeded_inputs(
    specs: list[TensorSpec],
    n: int,
    seed: int,
    *,
    shapes: dict[str, list[int]] | None = None,
    int_bounds: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Synthetic inputs that respect the declared dtypes and shapes: the first dimension is
    the batch (``n``), other dynamic dimensions come from ``shapes`` or default to 16; floats
    are standard normal, integers lie in [0, bound) where the graph shows a table size (else
    [0, 2)), booleans are fair coins."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if not spec.is_tensor:
            raise InferenceError(f"cannot synthesise a value for non-tensor input {spec.name!r} ({spec.dtype})")
        if shapes and spec.name in shapes:
            shape = [n, *list(shapes[spec.name])[1:]]
        elif spec.shape is None:
            raise InferenceError(f"input {spec.name!r} declares no shape: give options.shapes={{{spec.name!r}: [...]}}")
        else:
            shape = [n] + [d if isinstance(d, int) and d > 0 else DEFAULT_DYNAMIC_DIM for d in spec.shape[1:]]
        dtype = _numpy_dtype(spec.dtype)
        if dtype is None:
            feeds[spec.name] = np.array([f"token{i}" for i in rng.integers(0, 100, int(np.prod(shape)))]).reshape(shape)
        elif dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            high = (int_bounds or {}).get(spec.name, 2)
            feeds[spec.name] = rng.integers(0, max(high, 1), shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise InferenceError(f"cannot synthesise input {spec.name!r} of type {spec.dtype}")
    return feeds


# --- classifiers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierOutput:
    """Predictions of a classifier: ``indices`` index ``classes`` (the score columns)."""

    indices: np.ndarray
    scores: np.ndarray | None
    classes: np.ndarray
    score_output: str | None
    label_output: str | None

    @property
    def labels(self) -> np.ndarray:
        labels: np.ndarray = self.classes[self.indices]
        return labels


def _is_float(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _zipmap_to_array(seq: list[dict[Any, float]]) -> tuple[np.ndarray, np.ndarray]:
    if not seq:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    keys = list(seq[0].keys())
    scores = np.array([[row[k] for k in keys] for row in seq], dtype=np.float32)
    return scores, np.array(keys)


def interpret_classifier(
    outputs: dict[str, Any],
    *,
    class_labels: np.ndarray | None = None,
    score_output: str | None = None,
    label_output: str | None = None,
) -> ClassifierOutput:
    """Read class scores and predicted classes from raw outputs (see the module docstring).
    Raises ``OutputError`` when nothing looks like a classifier's output."""
    for name in (score_output, label_output):
        if name is not None and name not in outputs:
            raise OutputError(f"the model has no output {name!r}; it has {sorted(outputs)}")
    scores: np.ndarray | None = None
    classes: np.ndarray | None = None
    s_name = score_output
    if s_name is None:
        seqs = [k for k, v in outputs.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        floats2d = [k for k, v in outputs.items() if _is_float(v) and v.ndim == 2 and v.shape[1] >= 2]
        preferred = [k for k in floats2d if "prob" in k.lower()] or [
            k for k in floats2d if any(t in k.lower() for t in ("logit", "score"))
        ]
        found = preferred or floats2d or seqs
        s_name = found[0] if found else None
        if s_name is None:
            single = [k for k, v in outputs.items() if _is_float(v) and v.ndim == 2 and v.shape[1] == 1]
            s_name = single[0] if single else None
    if s_name is not None:
        raw = outputs[s_name]
        if isinstance(raw, list):
            scores, classes = _zipmap_to_array(raw)
        else:
            scores = np.asarray(raw, dtype=np.float32)
            if scores.ndim == 1:
                scores = scores[:, None]
            if scores.ndim != 2:
                raise OutputError(f"output {s_name!r} has shape {list(scores.shape)}; class scores need (N, C)")
            if scores.shape[1] == 1:  # one column: a binary probability or logit of class 1
                col = scores[:, 0]
                p = col if (col.min(initial=0) >= 0 and col.max(initial=0) <= 1) else 1 / (1 + np.exp(-col))
                scores = np.stack([1 - p, p], axis=1)
    l_name = label_output
    if l_name is None:
        ints = [
            k
            for k, v in outputs.items()
            if isinstance(v, np.ndarray)
            and v.dtype.kind in "iuUSO"
            and (v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 1))
        ]
        named = [k for k in ints if "label" in k.lower()] or ints
        l_name = named[0] if named else None
    labels = None if l_name is None else np.asarray(outputs[l_name]).reshape(-1)
    if scores is None and labels is None:
        raise OutputError(
            f"no output reads as class scores (N, C) or labels (N,): outputs are "
            f"{ {k: _describe(v) for k, v in outputs.items()} }"
        )
    if classes is None:
        n_cols = scores.shape[1] if scores is not None else None
        if class_labels is not None and (n_cols is None or len(class_labels) == n_cols):
            classes = np.asarray(class_labels)
        elif n_cols is not None:
            classes = np.arange(n_cols)
        else:
            assert labels is not None  # no scores here, and not neither
            classes = np.unique(labels)
    if labels is not None:
        indices, classes = encode(labels, classes)
    else:
        assert scores is not None
        indices = np.argmax(scores, axis=1).astype(np.int64)
    if scores is not None and scores.shape[1] < len(classes):
        # labels outside the score columns (never happens with consistent models): pad
        scores = np.pad(scores, ((0, 0), (0, len(classes) - scores.shape[1])))
    return ClassifierOutput(indices=indices, scores=scores, classes=classes, score_output=s_name, label_output=l_name)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    return type(value).__name__


def regression_values(outputs: dict[str, Any], output: str | None = None) -> np.ndarray:
    if output is not None:
        if output not in outputs:
            raise OutputError(f"the model has no output {output!r}; it has {sorted(outputs)}")
        return np.asarray(outputs[output], dtype=np.float64)
    floats = [k for k, v in outputs.items() if _is_float(v)]
    if not floats:
        raise OutputError("no float output to read as a regression value")
    return np.asarray(outputs[floats[0]], dtype=np.float64)


# --- detectors ------------------------------------------------------------------------------

DetectionAdapter = Callable[[dict[str, Any], dict[str, Any]], list[Detections]]


def _to_xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)
    if fmt == "cxcywh":
        half = b[..., 2:4] / 2
        return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)
    raise OutputError(f"box_format {fmt!r} is not one of xyxy, xywh, cxcywh")


def _find(outputs: dict[str, Any], options: dict[str, Any], key: str, hints: tuple[str, ...]) -> str | None:
    explicit = options.get(f"{key}_output")
    if explicit is not None:
        if explicit not in outputs:
            raise OutputError(f"the model has no output {explicit!r}; it has {sorted(outputs)}")
        return str(explicit)
    for hint in hints:
        for name in outputs:
            if hint in name.lower():
                return name
    return None


def boxes_scores_classes(outputs: dict[str, Any], options: dict[str, Any]) -> list[Detections]:
    b_name = _find(outputs, options, "boxes", ("box",))
    s_name = _find(outputs, options, "scores", ("score", "conf"))
    c_name = _find(outputs, options, "classes", ("class", "label", "cls"))
    n_name = _find(outputs, options, "count", ("num_det", "count", "num"))
    if b_name is None or s_name is None or c_name is None:
        raise OutputError(
            f"detection layout 'boxes_scores_classes' needs outputs named like boxes, scores and classes "
            f"(or options boxes_output/scores_output/classes_output); the model has {sorted(outputs)}"
        )
    boxes = _to_xyxy(np.asarray(outputs[b_name]), str(options.get("box_format", "xyxy")))
    scores = np.asarray(outputs[s_name], dtype=np.float64)
    classes = np.asarray(outputs[c_name])
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or classes.shape != scores.shape:
        raise OutputError(
            f"expected boxes (N, D, 4), scores (N, D), classes (N, D); got {list(boxes.shape)}, "
            f"{list(scores.shape)}, {list(classes.shape)}"
        )
    counts = np.asarray(outputs[n_name]).reshape(-1).astype(np.int64) if n_name else None
    out = []
    for i in range(len(boxes)):
        keep = (scores[i] >= 0) & (classes[i] >= 0)
        if counts is not None:
            keep &= np.arange(scores.shape[1]) < counts[i]
        out.append(Detections(boxes[i][keep], scores[i][keep], classes[i][keep].astype(np.int64)))
    return out


def packed(outputs: dict[str, Any], options: dict[str, Any]) -> list[Detections]:
    name = options.get("detections_output") or next(
        (k for k, v in outputs.items() if _is_float(v) and v.ndim == 3 and v.shape[-1] == 6), None
    )
    if name is None or name not in outputs:
        raise OutputError(
            f"detection layout 'packed' needs one float output (N, D, 6); the model has {sorted(outputs)}"
        )
    arr = np.asarray(outputs[name], dtype=np.float64)
    boxes = _to_xyxy(arr[..., :4], str(options.get("box_format", "xyxy")))
    out = []
    for i in range(len(arr)):
        keep = (arr[i, :, 4] >= 0) & (arr[i, :, 5] >= 0)
        out.append(Detections(boxes[i][keep], arr[i, keep, 4], arr[i, keep, 5].astype(np.int64)))
    return out


DETECTION_ADAPTERS: dict[str, DetectionAdapter] = {
    "boxes_scores_classes": boxes_scores_classes,
    "packed": packed,
}


def register_detection_adapter(name: str, adapter: DetectionAdapter) -> None:
    """Teach the validator another detector output layout; select it per model with
    metadata ``detection_layout`` or per request with option ``detection_layout``."""
    DETECTION_ADAPTERS[name] = adapter


def interpret_detections(outputs: dict[str, Any], options: dict[str, Any]) -> list[Detections]:
    layout = str(options.get("detection_layout", "boxes_scores_classes"))
    adapter = DETECTION_ADAPTERS.get(layout)
    if adapter is None:
        raise OutputError(f"unknown detection_layout {layout!r}; known: {', '.join(sorted(DETECTION_ADAPTERS))}")
    return adapter(outputs, options)
