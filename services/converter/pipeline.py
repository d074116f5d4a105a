"""One profile on one local source file: convert, run source and variant on identical inputs,
compare, and write the report. Synchronous and free of I/O other than local files, so the
service runs it in a worker thread and tests call it directly.

Which inputs: a profile that calibrates (int8-static, trt-int8) calibrates on the request's
calibration data and is checked on the registered dataset when both exist; when only one
real data set exists it is split, calibrating on the first part and checking on the rest, so
the check never sees the calibration samples. Other profiles are checked on the dataset, else
on the calibration data, else on seeded synthetic inputs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.converter import parity, tolerances
from services.converter.errors import ConversionFailure, ProfileError, RuntimeLoadError
from services.converter.inputs import InputSet
from services.converter.profiles import Profile
from services.converter.profiles.base import ConversionContext, Converted, Runner, first_line, release_memory
from services.converter.profiles.normalize import normalize_source
from shared import sandbox
from shared.artifacts import sha256_file
from shared.contracts.conversion import (
    REASON_CONVERSION_ERROR,
    REASON_NEEDS_CALIBRATION,
    REASON_PARITY_FAILED,
    REASON_UNSUPPORTED_MODEL,
    ConversionReport,
    OutputParity,
    ParityReport,
    Tolerance,
)
from shared.contracts.registry import TensorSpec
from shared.errors import InputError


@dataclass
class DataPlan:
    """The real input sets of one job (any may be absent) and a maker of synthetic ones."""

    dataset: InputSet | None
    calibration: InputSet | None
    synthetic: Callable[[], InputSet]
    _synthetic: InputSet | None = None
    _splits: dict[int, tuple[InputSet, InputSet]] = field(default_factory=dict)

    def _synth(self) -> InputSet:
        if self._synthetic is None:
            self._synthetic = self.synthetic()
        return self._synthetic

    def _split(self, data: InputSet) -> tuple[InputSet, InputSet]:
        if id(data) not in self._splits:
            self._splits[id(data)] = data.split(0.5)
        return self._splits[id(data)]

    def for_profile(self, needs_calibration: bool) -> tuple[InputSet, InputSet | None, str]:
        """(parity inputs, calibration inputs, note)."""
        if not needs_calibration:
            chosen = self.dataset or self.calibration or self._synth()
            return chosen, None, ""
        if self.calibration is not None and self.dataset is not None:
            return self.dataset, self.calibration, "calibrated on the request's data, checked on the dataset"
        real = self.calibration or self.dataset
        if real is None:
            raise InputError(
                REASON_NEEDS_CALIBRATION,
                "this profile calibrates activation ranges on real data and there is none: register the model "
                "with a dataset, or send calibration data (calibration_uri / --calibration FILE.npz)",
            )
        if len(real.batches) >= 2:
            calib, check = self._split(real)
            return (
                check,
                calib,
                f"{real.source} data split: calibrated on {calib.samples} samples, "
                f"checked on the other {check.samples}",
            )
        return real, real, f"only {real.samples} {real.source} samples: calibrated and checked on the same samples"


@dataclass
class References:
    """The source's outputs per input set, computed once per job."""

    source: Path
    _cache: dict[int, dict[str, parity.Collected]] = field(default_factory=dict)
    _names: list[str] = field(default_factory=list)

    def get(self, data: InputSet) -> dict[str, parity.Collected]:
        if id(data) not in self._cache:
            from services.converter.profiles.base import OrtRunner

            sandbox.step("loading the source model")
            try:
                runner = OrtRunner(self.source)
            except RuntimeLoadError as exc:
                raise ConversionFailure(
                    REASON_UNSUPPORTED_MODEL, f"ONNX Runtime cannot load the source model: {exc}"
                ) from exc
            try:
                self._cache[id(data)] = run_all(runner, data, who="source")
                self._names = runner.output_names
            finally:
                runner.close()
                release_memory()
        return self._cache[id(data)]


def run_all(runner: Runner, data: InputSet, *, who: str) -> dict[str, parity.Collected]:
    per_output: dict[str, list[Any]] = {name: [] for name in runner.output_names}
    for batch in data.batches:
        sandbox.step(f"{who} inference", {k: list(v.shape) for k, v in batch.items()})
        try:
            values = runner.run(batch)
        except Exception as exc:  # onnxruntime's RuntimeException and friends
            shapes = {k: list(v.shape) for k, v in batch.items()}
            reason = REASON_UNSUPPORTED_MODEL if who == "source" else REASON_CONVERSION_ERROR
            hint = " (give input shapes in the request)" if who == "source" and data.source == "synthetic" else ""
            raise ConversionFailure(
                reason, f"the {who} model fails on {data.source} inputs of shapes {shapes}: {first_line(exc)}{hint}"
            ) from exc
        for name in per_output:
            per_output[name].append(values.get(name))
    return {name: parity.collect(values) for name, values in per_output.items()}


@dataclass
class ProfileRun:
    profile: Profile
    options: dict[str, Any]
    source: Path
    source_ref: str
    source_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    workdir: Path
    data: DataPlan
    references: References
    task: str | None = None
    tolerance: Tolerance | None = None
    output_tolerances: dict[str, Tolerance] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    cache_dir: Path | None = None
    key: str = ""
    variant: str = ""


@dataclass
class Outcome:
    report: ConversionReport
    path: Path
    format: str


def is_classifier_task(task: str | None) -> bool:
    return task is None or "classif" in task.lower()


def new_report(run: ProfileRun) -> ConversionReport:
    """The report of ``run`` before anything ran: what, from what, where, with which tools."""
    return ConversionReport(
        profile=run.profile.id,
        source_ref=run.source_ref,
        source_sha256=run.source_sha256,
        size_before_bytes=run.source.stat().st_size,
        duration_s=0.0,
        options=run.options,
        host=socket.gethostname(),
        variant=run.variant,
        format=run.profile.output_format,
        key=run.key,
        tool_versions=run.profile.tool_versions(),
    )


def run_profile(run: ProfileRun) -> Outcome:
    """Convert and check; raises ConversionFailure (with the report so far) when no variant
    may be registered."""
    started = time.perf_counter()
    report = new_report(run)
    try:
        return _convert_and_check(run, report, started)
    except (InputError, ProfileError, ConversionFailure) as exc:
        if isinstance(exc, ConversionFailure) and exc.report is report:
            raise  # parity failed: the report is complete
        report.duration_s = round(time.perf_counter() - started, 4)
        raise ConversionFailure(exc.code, exc.message, report) from exc


def _convert_and_check(run: ProfileRun, report: ConversionReport, started: float) -> Outcome:
    check_set, calibration, data_note = run.data.for_profile(run.profile.needs_calibration)
    # The source's outputs first: its session is closed before the conversion starts, so the
    # two never hold memory at the same time (peak memory stays that of the larger phase).
    referenced = time.perf_counter()
    references = run.references.get(check_set)
    reference_s = time.perf_counter() - referenced
    run.workdir.mkdir(parents=True, exist_ok=True)
    converting = time.perf_counter()
    source, normalized = normalize_source(run.source, run.workdir)
    context = ConversionContext(
        source=source,
        workdir=run.workdir,
        inputs=run.inputs,
        outputs=run.outputs,
        options=dict(run.options),
        calibration=calibration,
        shapes=run.shapes,
        cache_dir=run.cache_dir,
        sample=check_set.batches[0] if check_set.batches else None,
    )
    sandbox.step(f"{run.profile.id} conversion")
    try:
        converted = run.profile.convert(context)
    finally:
        release_memory()
    report.conversion_s = round(time.perf_counter() - converting, 4)
    if normalized:
        converted.details["normalized_source"] = normalized
    report.details = converted.details
    report.size_after_bytes = converted.path.stat().st_size
    report.format = converted.format

    checked = time.perf_counter()
    sandbox.step(f"loading the {run.profile.id} variant")
    results = check_variant(run, converted.path, check_set, references)
    notes = [data_note] if data_note else []
    if not all(r.passed for r in results) and context.sample is not None:
        converted, results = _try_fallback(run, context, converted, results, check_set, references, notes)
        report.details = converted.details
        report.size_after_bytes = converted.path.stat().st_size
    report.parity = parity_report(results, check_set, calibration, notes)
    report.parity_s = round(time.perf_counter() - checked + reference_s, 4)
    report.variant_sha256 = sha256_file(converted.path)
    report.duration_s = round(time.perf_counter() - started, 4)
    if not report.parity.passed:
        summary = parity.summarize(results) or "; ".join(notes)
        raise ConversionFailure(REASON_PARITY_FAILED, f"{run.profile.id} breaks parity: {summary}", report)
    return Outcome(report=report, path=converted.path, format=converted.format)


def _try_fallback(
    run: ProfileRun,
    context: ConversionContext,
    converted: Converted,
    results: list[OutputParity],
    check_set: InputSet,
    references: dict[str, parity.Collected],
    notes: list[str],
) -> tuple[Converted, list[OutputParity]]:
    """The profile's fallback for a variant that breaks parity (e.g. fp16 -> mixed precision:
    keep the nodes that break parity in the source precision), when it has one."""
    fallback = getattr(run.profile, "fallback", None)
    if fallback is None:
        return converted, results
    try:
        retried = fallback(context, converted, [r.name for r in results if not r.passed])
        retried_results = check_variant(run, retried.path, check_set, references)
    except (ProfileError, ConversionFailure) as exc:
        notes.append(f"fallback not taken: {exc.message}")
        return converted, results
    finally:
        release_memory()
    return retried, retried_results


def parity_report(
    results: list[OutputParity], check_set: InputSet, calibration: InputSet | None, notes: list[str]
) -> ParityReport:
    """The parity verdict: every compared output within tolerance, and at least one compared."""
    passed = all(r.passed for r in results)
    if not any(r.compared for r in results):
        passed = False
        notes.append("no output could be compared")
    skipped = [r.name for r in results if not r.compared]
    if skipped:
        notes.append(f"not compared: {', '.join(skipped)}")
    return ParityReport(
        passed=passed,
        input_source=check_set.source,
        samples=check_set.samples,
        seed=check_set.seed,
        outputs=results,
        batches=len(check_set.batches),
        shapes=check_set.shapes,
        calibration_source=calibration.source if calibration is not None else None,
        calibration_samples=calibration.samples if calibration is not None else 0,
        note="; ".join([check_set.note, *notes]).strip("; "),
    )


def check_variant(
    run: ProfileRun, path: Path, check_set: InputSet, references: dict[str, parity.Collected]
) -> list[OutputParity]:
    """Load the variant at ``path`` in its runtime, run it on ``check_set`` and compare with
    the source's outputs. A variant that does not load is a ConversionFailure."""
    try:
        runner = run.profile.runner(path)
    except RuntimeLoadError as exc:
        raise ConversionFailure(REASON_CONVERSION_ERROR, f"the {run.profile.id} variant does not load: {exc}") from exc
    except ProfileError as exc:
        raise ConversionFailure(exc.code, exc.message) from exc
    try:
        got = run_all(runner, check_set, who="variant")
    finally:
        runner.close()
        release_memory()
    return compare_all(run, references, got, check_set)


def compare_all(
    run: ProfileRun,
    references: dict[str, parity.Collected],
    got: dict[str, parity.Collected],
    data: InputSet,
) -> list[OutputParity]:
    classifier = is_classifier_task(run.task)
    results = []
    default = run.profile.default_tolerance
    for name, ref in references.items():
        tol = tolerances.for_output(default, run.tolerance, run.output_tolerances, name)
        if name not in got:
            results.append(
                OutputParity(
                    name=name, tolerance=tol, passed=False, failed=["missing"], note="the variant lacks this output"
                )
            )
            continue
        results.append(parity.compare_output(name, ref, got[name], tol, classifier=classifier, labels=data.labels))
    return results


# The last job's data plan and source outputs, kept in a sandbox worker between the profiles of
# one job, so the source runs once per job as it did in-process (a job's profiles run one after
# the other; another worker only recomputes them).
_last_job: tuple[str, DataPlan, References] | None = None


def run_profile_isolated(run: ProfileRun, job: str) -> Outcome:
    """``run_profile`` in a sandbox worker (shared/sandbox.py); ``job`` names the job, whose
    plan and references this worker reuses from the job's previous profile."""
    global _last_job
    if _last_job is not None and _last_job[0] == job:
        run.data, run.references = _last_job[1], _last_job[2]
    else:
        _last_job = (job, run.data, run.references)
    return run_profile(run)
