"""What one conversion job is, and the pure decisions about it that come before any work:
which profiles a command asks for, whether the command is valid, which profile and options a
job runs, and how many parity samples it checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.converter import keys
from services.converter.errors import ConversionFailure, InvalidOptions, ProfileError
from services.converter.pipeline import DataPlan, ProfileRun, References
from services.converter.profiles import Profile, all_profiles, get_profile
from services.converter.tolerances import check_tolerance
from shared.contracts.conversion import (
    REASON_INVALID_REQUEST,
    REASON_NEEDS_INPUT_SPEC,
    REASON_UNAVAILABLE_ON_HOST,
    ConvertModel,
    ProfileInfo,
    Tolerance,
)
from shared.contracts.identity import ModelRef
from shared.contracts.registry import INPUTS_NEED_SPEC, ModelRecord
from shared.errors import InputError, InvalidReference
from shared.inputs import InputSet, synthetic_inputs


@dataclass
class Job:
    """Profiles to run on one source record, with the command that asked (None when the job
    comes from a registration)."""

    record: ModelRecord
    profiles: list[str]
    command: ConvertModel | None
    correlation_id: str
    workdir: Path
    source: Path | None = None
    calibration: InputSet | None = None
    calibration_sha256: str | None = None
    dataset: InputSet | None = None
    data_error: ConversionFailure | None = None
    plan: DataPlan | None = None
    references: References | None = None

    @property
    def ref(self) -> str:
        return self.record.ref

    @property
    def tolerance(self) -> Tolerance | None:
        return self.command.tolerance if self.command else None

    @property
    def output_tolerances(self) -> dict[str, Tolerance]:
        return self.command.output_tolerances if self.command else {}

    @property
    def shapes(self) -> dict[str, list[int]]:
        return self.command.shapes if self.command else {}

    @property
    def seed(self) -> int:
        return self.command.seed if self.command else 0


def planned_profiles(cmd: ConvertModel, defaults: tuple[str, ...]) -> list[str]:
    """The command's profiles (the defaults when none), plus ``opset-<target_opset>``, each once."""
    wanted = list(cmd.profiles) or list(defaults)
    if cmd.target_opset is not None:
        wanted.append(f"opset-{cmd.target_opset}")
    seen: list[str] = []
    for profile in wanted:
        if profile not in seen:
            seen.append(profile)
    return seen


def check_command(cmd: ConvertModel) -> None:
    """Raises ``ConversionFailure(invalid_request)`` for a reference or tolerances that no
    conversion could honour."""
    try:
        ModelRef.parse(cmd.ref)
    except InvalidReference as exc:
        raise ConversionFailure(REASON_INVALID_REQUEST, exc.message) from None
    problems = []
    for tol in [cmd.tolerance, *cmd.output_tolerances.values()]:
        if tol is not None:
            problems += check_tolerance(tol)
    if cmd.parity_samples is not None and cmd.parity_samples <= 0:
        problems.append("parity_samples must be positive")
    if problems:
        raise ConversionFailure(REASON_INVALID_REQUEST, "; ".join(problems))


def parity_samples(job: Job, configured: int) -> int:
    """The command's sample count, else the configured one; never more than 16x the configured."""
    asked = job.command.parity_samples if job.command and job.command.parity_samples else None
    return min(asked or configured, configured * 16)


def failure_key(job: Job, profile_id: str) -> str:
    """What a failure before the conversion key is known derives its event id from."""
    command_id = job.command.event_id if job.command else ""
    return keys.event_id("convfail", job.record.ref, job.record.sha256, profile_id, command_id)


def select_profile(job: Job, profile_id: str, variant: str) -> tuple[Profile, dict[str, Any]]:
    """The profile and its normalised options for this job; a ``ConversionFailure`` when the
    profile cannot run here (a skip), is unknown, or the job's request or data is unusable."""
    failure_id = failure_key(job, profile_id)
    try:
        profile = get_profile(profile_id)
        options = profile.normalize_options(_options_for(job, profile_id))
    except ProfileError as exc:
        raise ConversionFailure(exc.code, exc.message, key=failure_id) from None
    if not keys.valid_variant(variant):
        raise ConversionFailure(REASON_INVALID_REQUEST, f"variant name {variant!r} is not valid", key=failure_id)
    unavailable = profile.availability()
    if unavailable is not None:
        raise ConversionFailure(REASON_UNAVAILABLE_ON_HOST, unavailable, key=job.record.sha256)
    if job.data_error is not None:
        raise ConversionFailure(job.data_error.code, job.data_error.message, key=failure_id)
    return profile, options


def conversion_key(job: Job, profile_id: str, options: dict[str, Any], samples: int) -> str:
    """The idempotency key of ``profile_id`` on this job (keys.py)."""
    record = job.record
    return keys.conversion_key(
        source_sha256=record.sha256,
        profile=profile_id,
        options=options,
        tolerance=job.tolerance,
        output_tolerances=job.output_tolerances,
        dataset_uri=record.dataset_uri,
        calibration_sha256=job.calibration_sha256,
        shapes=job.shapes,
        samples=samples,
        seed=job.seed,
    )


def profile_run(
    job: Job, profile: Profile, options: dict[str, Any], *, variant: str, key: str, cache_dir: Path
) -> ProfileRun:
    """What a sandbox worker needs to run ``profile`` on the job's fetched source."""
    record = job.record
    assert job.source is not None and job.plan is not None and job.references is not None
    return ProfileRun(
        profile=profile,
        options=options,
        source=job.source,
        source_ref=record.ref,
        source_sha256=record.sha256,
        inputs=record.inputs,
        outputs=record.outputs,
        workdir=job.workdir / profile.id,
        data=job.plan,
        references=job.references,
        task=record.task,
        tolerance=job.tolerance,
        output_tolerances=job.output_tolerances,
        shapes=job.shapes,
        cache_dir=cache_dir,
        key=key,
        variant=variant,
    )


def _options_for(job: Job, profile_id: str) -> dict[str, Any]:
    if job.command is None:
        return {}
    options = job.command.options.get(profile_id, {})
    if not isinstance(options, dict):
        raise InvalidOptions(f"options for {profile_id} must be an object, got {type(options).__name__}")
    return dict(options)


def profile_infos() -> list[ProfileInfo]:
    infos = []
    for profile in all_profiles():
        reason = profile.availability()
        infos.append(
            ProfileInfo(
                id=profile.id,
                description=profile.description,
                precision=profile.precision,
                output_format=profile.output_format,
                available=reason is None,
                reason=reason or "",
                default_tolerance=profile.default_tolerance,
                needs_calibration=profile.needs_calibration,
            )
        )
    return infos


def job_synthetic_inputs(record: ModelRecord, samples: int, seed: int, shapes: dict[str, list[int]] | None) -> InputSet:
    """Seeded inputs at the shapes the registry resolved; a model that needs an input spec
    gets none unless the request gave shapes. Module-level, so a partial of it travels to a
    sandbox worker."""
    if record.input_status == INPUTS_NEED_SPEC and not shapes:
        raise InputError(REASON_NEEDS_INPUT_SPEC, record.input_message)
    return synthetic_inputs(record.inputs, samples=samples, seed=seed, shapes=shapes, resolved=record.resolved_inputs)
