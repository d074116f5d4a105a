"""The demo behind ``inferlab up --demo`` (``make run``) and ``inferlab demo``.

It trains real models at start on scikit-learn's bundled digits (nothing is downloaded): an
``MLPClassifier`` exported with skl2onnx, and a small CNN exported with ``torch.onnx.export``
when PyTorch is installed. Each goes in with its labelled test set (inputs, ``labels`` and
``groups`` for the fairness check) and registers through the SDK like any pipeline would.
The automatic chain then does the rest: converter -> benchmarker -> validator. The demo only
follows the ``model.>`` stream and prints one readable line per step, then a summary table.

The parts that decide what to print (:class:`Tracker`) are pure: they take stream events and
return lines, so tests feed them real events without a platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.contracts.benchmark import BenchmarkFailed, ConfigResult, ModelBenchmarked
from shared.contracts.conversion import ConversionFailed, ConversionSkipped, ModelConverted
from shared.contracts.identity import BASE_VARIANT
from shared.contracts.registry import ModelRegistered, ModelRejected
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.errors import InferlabError

DEMO_VERSION = "1.0.0"
MLP_NAME = "digits-mlp"
CNN_NAME = "digits-cnn"
KINDS = ("mlp", "cnn")
SPLIT_SEED = 7
TRAIN_SHARE = 2 / 3
# What the demo models must meet to be called ready (variants inherit them from their
# parent). Latency is generous: the point is to show the checklist, not to fail a slow laptop.
REQUIREMENTS = ["accuracy>=0.9", "p99_ms<=25"]
DEFAULT_TIMEOUT_S = 900.0

Say = Callable[[str], None]


class DemoUnavailable(InferlabError):
    """The demo's training libraries are missing."""

    code = "demo_unavailable"


@dataclass(frozen=True)
class DemoModel:
    name: str
    model_path: Path
    dataset_path: Path
    description: str
    holdout_accuracy: float
    train_samples: int
    test_samples: int
    task: str = "classification"

    @property
    def ref(self) -> str:
        return f"{self.name}@{DEMO_VERSION}"

    def metadata(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "source": "inferlab demo",
            "training_accuracy_holdout": round(self.holdout_accuracy, 4),
            "requirements": list(REQUIREMENTS),
        }


# --- data ---------------------------------------------------------------------------------


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, pixels scaled to [0, 1], shuffled once with a fixed seed
    and split two thirds / one third: (x_train, y_train, x_test, y_test)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DemoUnavailable(
            "the demo trains its models with scikit-learn: pip install scikit-learn skl2onnx (make run installs them)"
        ) from exc
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(len(y) * TRAIN_SHARE)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def stroke_groups(x: np.ndarray, threshold: float) -> np.ndarray:
    """A real subgroup of handwritten digits for the fairness check: digits written with
    little ink ("light") against heavy strokes ("heavy"), split at the training set's median
    ink (sum of pixel intensities)."""
    ink = x.reshape(len(x), -1).sum(axis=1)
    return np.where(ink < threshold, "light", "heavy")


def write_dataset(path: Path, input_name: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {input_name: x, "labels": y, "groups": groups.astype(str)}
    np.savez(path, **arrays)
    return path


def _ink_threshold(x_train: np.ndarray) -> float:
    return float(np.median(x_train.reshape(len(x_train), -1).sum(axis=1)))


def build_mlp(folder: Path) -> DemoModel:
    """``MLPClassifier(64 -> 64 -> 10)`` on the digits, exported with skl2onnx (input ``X``
    float32 [N, 64]; outputs ``label`` and ``probabilities``). Its MatMuls are what the fp16
    and int8 profiles convert (a single-operator linear model would be "not applicable")."""
    x_train, y_train, x_test, y_test = digits_split()
    try:
        from skl2onnx import to_onnx
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError as exc:
        raise DemoUnavailable("the demo exports its MLP with skl2onnx: pip install skl2onnx") from exc
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0).fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    onx = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{MLP_NAME}.onnx"
    onnx.save(onx, str(model_path))
    groups = stroke_groups(x_test, _ink_threshold(x_train))
    dataset = write_dataset(folder / f"{MLP_NAME}-test.npz", "X", x_test, y_test, groups)
    return DemoModel(
        name=MLP_NAME,
        model_path=model_path,
        dataset_path=dataset,
        description="scikit-learn MLPClassifier (64 -> 64 -> 10) on the 8x8 digits, exported with skl2onnx",
        holdout_accuracy=accuracy,
        train_samples=len(y_train),
        test_samples=len(y_test),
    )


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def digits_cnn() -> Any:
    """The demo's CNN architecture, untrained: Conv-BN-ReLU-Pool, Conv-ReLU-Pool, Linear over
    1x8x8 digit images (tests train and export the same network)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16 * 2 * 2, 10)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            t = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(t))), 2)
            t = torch.nn.functional.max_pool2d(torch.relu(self.conv2(t)), 2)
            logits: torch.Tensor = self.fc(torch.flatten(t, 1))
            return logits

    return Net()


def export_digits_cnn(net: Any, path: Path) -> Path:
    """TorchScript export (``dynamo=False``: no extra dependencies) with a dynamic batch: input
    ``image`` [N, 1, 8, 8], output ``logits``."""
    import torch

    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(2, 1, 8, 8),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def build_cnn(folder: Path, *, epochs: int = 15) -> DemoModel:
    """A small CNN (Conv-BN-ReLU-Pool, Conv-ReLU-Pool, Linear) trained for a few epochs on the
    digits as 1x8x8 images, exported with the TorchScript exporter (``dynamo=False``: no extra
    dependencies) with a dynamic batch (input ``image`` [N, 1, 8, 8], output ``logits``)."""
    try:
        import torch
    except Exception as exc:
        raise DemoUnavailable("the demo CNN needs PyTorch: pip install 'inferlab[torch]'") from exc
    x_train, y_train, x_test, y_test = digits_split()
    torch.manual_seed(0)
    images = torch.from_numpy(x_train.reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y_train)

    net = digits_cnn()
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), 64):
            batch = order[i : i + 64]
            optim.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(images[batch]), labels[batch])
            torch.autograd.backward(loss)
            optim.step()
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(x_test.reshape(-1, 1, 8, 8))).argmax(dim=1).numpy()
    accuracy = float((predicted == y_test).mean())
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{CNN_NAME}.onnx"
    export_digits_cnn(net, model_path)
    groups = stroke_groups(x_test, _ink_threshold(x_train))
    dataset = write_dataset(folder / f"{CNN_NAME}-test.npz", "image", x_test.reshape(-1, 1, 8, 8), y_test, groups)
    return DemoModel(
        name=CNN_NAME,
        model_path=model_path,
        dataset_path=dataset,
        description=f"PyTorch CNN (2 conv layers, {epochs} epochs) on the 8x8 digits, exported with torch.onnx",
        holdout_accuracy=accuracy,
        train_samples=len(y_train),
        test_samples=len(y_test),
    )


def parse_kinds(text: str | None) -> list[str]:
    """``"mlp,cnn"`` -> ["mlp", "cnn"]; None means every kind this installation can build."""
    if text is None:
        return ["mlp", "cnn"] if torch_available() else ["mlp"]
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InferlabError(f"unknown demo model(s) {unknown or text!r}; choose from {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


def build_models(folder: Path, kinds: Iterable[str]) -> list[DemoModel]:
    builders = {"mlp": build_mlp, "cnn": build_cnn}
    return [builders[k](folder) for k in kinds]


# --- following the chain ------------------------------------------------------------------


def default_config(results: list[ConfigResult]) -> ConfigResult | None:
    """The lightest configuration of a sweep (smallest batch x concurrency, fewest threads),
    the one the registry and the validator read latency from."""
    if not results:
        return None
    return min(results, key=lambda r: (r.batch_size * r.concurrency, r.intra_op_threads, r.batch_size))


@dataclass
class VariantState:
    ref: str
    variant: str
    size_bytes: int = 0
    profile: str | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    config_key: str = ""
    benchmark_error: str | None = None
    benchmarked: bool = False
    validated: bool = False
    ready: bool | None = None
    accuracy: float | None = None
    failed_criteria: list[str] = field(default_factory=list)
    validation_error: str | None = None
    parity_cosine: float | None = None
    parity_top1: float | None = None


@dataclass
class ModelState:
    name: str
    version: str
    registered: bool = False
    rejected: str | None = None
    variants: dict[str, VariantState] = field(default_factory=dict)
    conversions: dict[str, str] = field(default_factory=dict)  # profile -> converted/failed/skipped


class Tracker:
    """Folds the stream's events about the demo models into their state, returning the
    lines a person should see. ``profiles``: the conversion profiles the converter runs on
    every base model (the demo waits for one outcome per profile)."""

    def __init__(self, names: Iterable[str], version: str, profiles: Iterable[str]) -> None:
        self.version = version
        self.profiles = list(profiles)
        self.models = {n: ModelState(n, version) for n in names}

    def _variant(self, model: ModelState, ref: str, variant: str) -> VariantState:
        state = model.variants.get(ref)
        if state is None:
            state = model.variants[ref] = VariantState(ref=ref, variant=variant)
        return state

    def feed(self, message: Any) -> list[str]:
        name = getattr(message, "name", None)
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None or getattr(message, "version", self.version) != self.version:
            return []
        if isinstance(message, ModelRegistered):
            return self._registered(model, message)
        if isinstance(message, ModelRejected):
            model.rejected = f"{message.reason.value}: {message.message}"
            return [f"{name}@{message.version}  REJECTED  {model.rejected}"]
        if isinstance(message, ModelConverted):
            return self._converted(model, message)
        if isinstance(message, ConversionFailed):
            model.conversions[message.profile] = "failed"
            ref = f"{name}@{message.version}"
            return [f"{ref}  conversion {message.profile} FAILED ({message.reason}): {message.message}"]
        if isinstance(message, ConversionSkipped):
            model.conversions[message.profile] = "skipped"
            return [f"{name}@{message.version}  conversion {message.profile} skipped ({message.reason})"]
        if isinstance(message, ModelBenchmarked):
            return self._benchmarked(model, message)
        if isinstance(message, BenchmarkFailed):
            state = self._variant(model, message.ref, message.variant)
            state.benchmarked = True
            state.benchmark_error = f"{message.reason}: {message.message}"
            return [f"{message.ref}  benchmark FAILED ({message.reason}): {message.message}"]
        if isinstance(message, ModelValidated):
            return self._validated(model, message)
        if isinstance(message, ValidationErrored):
            state = self._variant(model, message.ref, message.variant)
            state.validated = True
            state.validation_error = f"{message.reason}: {message.message}"
            return [f"{message.ref}  validation could not run ({message.reason}): {message.message}"]
        return []

    def _registered(self, model: ModelState, message: ModelRegistered) -> list[str]:
        """The base once; a variant each time it is registered."""
        record = message.record
        state = self._variant(model, record.ref, record.variant)
        state.size_bytes = record.size_bytes
        if record.variant == BASE_VARIANT:
            if model.registered:
                return []
            model.registered = True
            return [f"{record.ref}  registered  ({_size(record.size_bytes)}, sha256 {record.sha256[:12]}…)"]
        return [f"{record.ref}  registered as a variant of {record.parent}  ({_size(record.size_bytes)})"]

    def _converted(self, model: ModelState, message: ModelConverted) -> list[str]:
        """A variant made, with the converter's parity figures."""
        profile = message.profile or message.variant
        model.conversions[profile] = "converted"
        state = self._variant(model, message.ref, message.variant)
        state.profile = profile
        report = message.report
        parity = report.parity
        detail = ""
        if parity is not None:
            cosines = [o.cosine_similarity for o in parity.outputs if o.compared and o.cosine_similarity is not None]
            if cosines:
                state.parity_cosine = min(cosines)
            tops = [o.top1_agreement for o in parity.outputs if o.top1_agreement is not None]
            if tops:
                state.parity_top1 = min(tops)
            parts = [f"parity passed on {parity.samples} {parity.input_source} samples"]
            if state.parity_top1 is not None:
                parts.append(f"top-1 agreement {state.parity_top1:.3f}")
            if state.parity_cosine is not None:
                parts.append(f"cosine {state.parity_cosine:.5f}")
            detail = ", ".join(parts)
        size = ""
        if report.size_after_bytes:
            size = f"{_size(report.size_before_bytes)} -> {_size(report.size_after_bytes)}; "
        return [f"{message.ref}  converted ({profile})  ({size}{detail})"]

    def _benchmarked(self, model: ModelState, message: ModelBenchmarked) -> list[str]:
        """The default configuration's latency and throughput."""
        state = self._variant(model, message.ref, message.variant)
        state.benchmarked = True
        state.benchmark_error = None
        best = default_config(message.results)
        if best is None:
            return [f"{message.ref}  benchmarked: nothing measured"]
        state.p50_ms, state.p99_ms = best.latency.p50_ms, best.latency.p99_ms
        state.throughput_ips, state.config_key = best.throughput_ips, best.config_key
        return [
            f"{message.ref}  benchmarked  p50 {best.latency.p50_ms:.4f} ms, p99 {best.latency.p99_ms:.4f} ms, "
            f"{best.throughput_ips:,.0f} inf/s ({best.latency.samples} samples, {_config(best)})"
        ]

    def _validated(self, model: ModelState, message: ModelValidated) -> list[str]:
        """The readiness verdict and the criteria that failed."""
        state = self._variant(model, message.ref, message.variant)
        state.validated = True
        state.validation_error = None
        state.ready = message.ready
        state.accuracy = message.accuracy
        state.failed_criteria = [c.metric for c in message.report.criteria if c.passed is False]
        verdict = "READY" if message.ready else "NOT READY"
        accuracy = f"accuracy {message.accuracy:.4f}" if message.accuracy is not None else "no accuracy"
        failed = f"; failed: {', '.join(state.failed_criteria)}" if state.failed_criteria else ""
        return [f"{message.ref}  validated  {verdict}  ({accuracy}{failed})"]

    def pending(self) -> list[str]:
        """What the demo still waits for, in words (empty when it is complete)."""
        out = []
        for model in self.models.values():
            if model.rejected:
                continue
            if not model.registered:
                out.append(f"{model.name}@{model.version}: registration")
                continue
            missing = [p for p in self.profiles if p not in model.conversions]
            if missing:
                out.append(f"{model.name}@{model.version}: conversion {', '.join(missing)}")
            for state in model.variants.values():
                if not state.benchmarked:
                    out.append(f"{state.ref}: benchmark")
                elif not state.validated:
                    out.append(f"{state.ref}: validation")
        return out

    def done(self) -> bool:
        return not self.pending()

    def rows(self) -> list[VariantState]:
        out = []
        for model in self.models.values():
            out.extend(sorted(model.variants.values(), key=lambda s: (s.variant != BASE_VARIANT, s.variant)))
        return out


def _size(n: int) -> str:
    from shared.cli.output import human_bytes

    return human_bytes(n)


def _config(result: ConfigResult) -> str:
    provider = result.provider.removesuffix("ExecutionProvider")
    return (
        f"{provider}, batch {result.batch_size}, {result.intra_op_threads} thread(s), concurrency {result.concurrency}"
    )


def summary_rows(tracker: Tracker) -> list[list[str]]:
    rows = []
    for s in tracker.rows():
        if s.ready is None:
            verdict = "could not validate" if s.validation_error else "pending"
        else:
            verdict = "READY" if s.ready else "NOT READY"
            if s.failed_criteria:
                verdict += f" ({', '.join(s.failed_criteria)})"
        rows.append(
            [
                s.ref,
                s.variant,
                _size(s.size_bytes) if s.size_bytes else "",
                f"{s.p50_ms:.4f}" if s.p50_ms is not None else ("failed" if s.benchmark_error else ""),
                f"{s.p99_ms:.4f}" if s.p99_ms is not None else "",
                f"{s.accuracy:.4f}" if s.accuracy is not None else "",
                verdict,
            ]
        )
    return rows


SUMMARY_COLUMNS = ["model", "variant", "size", "p50 ms", "p99 ms", "accuracy", "readiness"]


async def converter_profiles(client: Any, fallback: Iterable[str]) -> list[str]:
    """The profiles the running converter applies to every base model (its own settings,
    which need not be ours), else ``fallback``."""
    with contextlib.suppress(Exception):
        listed = await client.conversion_profiles(timeout=3.0)
        if listed.default_profiles:
            return list(listed.default_profiles)
    return list(fallback)


async def run_demo(
    client: Any,
    models: list[DemoModel],
    *,
    say: Say,
    timeout: float = DEFAULT_TIMEOUT_S,
    profiles: list[str] | None = None,
) -> Tracker:
    """Register ``models`` (skipping those already registered: their stored events replay)
    and follow the chain until every step has an outcome or ``timeout`` passes. Returns the
    tracker; its ``pending()`` lists what did not finish in time."""
    from shared.errors import NotFound

    if profiles is None:
        profiles = await converter_profiles(client, client.settings.converter_profiles)
    tracker = Tracker([m.name for m in models], DEMO_VERSION, profiles)
    finished = asyncio.Event()

    async def follow() -> None:
        async for event in client.events("model.>", replay=True):
            if event.message is None:
                continue
            for line in tracker.feed(event.message):
                say(line)
            if tracker.done():
                finished.set()
                return

    follower = asyncio.create_task(follow())
    try:
        for model in models:
            try:
                await client.get(model.ref)
                say(f"{model.ref}  already registered; replaying its events")
                continue
            except NotFound:
                pass
            say(
                f"{model.ref}  trained: {model.description}; holdout accuracy {model.holdout_accuracy:.4f} "
                f"({model.train_samples} train / {model.test_samples} test samples)"
            )
            await client.register(
                model.model_path,
                name=model.name,
                version=DEMO_VERSION,
                task=model.task,
                dataset=model.dataset_path,
                metadata=model.metadata(),
                tags={"demo": "true"},
            )
        start = time.monotonic()
        waiter = asyncio.create_task(finished.wait())
        done, _ = await asyncio.wait({waiter, follower}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if follower in done and follower.exception() is not None:
            raise follower.exception()  # type: ignore[misc]
        if not tracker.done():
            say(f"still waiting after {time.monotonic() - start:.0f}s for: {'; '.join(tracker.pending())}")
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
    return tracker
