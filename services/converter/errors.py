"""The converter's exceptions, all in the one hierarchy (shared/errors.py). ``code`` is the
``reason`` that ``model.conversion_failed`` / ``model.conversion_skipped`` carries; the
service turns them into those events in one place (failures.py)."""

from __future__ import annotations

from shared.contracts.conversion import (
    REASON_CONVERSION_ERROR,
    REASON_INVALID_REQUEST,
    REASON_NEEDS_CALIBRATION,
    REASON_NOT_APPLICABLE,
    REASON_UNAVAILABLE_ON_HOST,
    REASON_UNKNOWN_PROFILE,
    REASON_UNSUPPORTED_MODEL,
    ConversionReport,
)
from shared.errors import InferlabError

# Outcomes that are not failures: the profile has nothing to do here, or cannot run here.
SKIP_REASONS = frozenset({REASON_NOT_APPLICABLE, REASON_UNAVAILABLE_ON_HOST})


class ConversionFailure(InferlabError):
    """A profile run that ends without a variant. ``report`` is the report so far (when the
    conversion got that far); ``key`` is what the outcome's event id derives from (set by the
    service once it knows it); ``skipped`` for not-applicable / unavailable."""

    def __init__(self, code: str, message: str, report: ConversionReport | None = None, *, key: str = "") -> None:
        super().__init__(message, code=code)
        self.report = report
        self.key = key

    @property
    def skipped(self) -> bool:
        return self.code in SKIP_REASONS


class ProfileError(InferlabError):
    """A profile refused or failed on this model; the subclass says how."""

    code = REASON_CONVERSION_ERROR


class NotApplicable(ProfileError):
    code = REASON_NOT_APPLICABLE


class Unavailable(ProfileError):
    code = REASON_UNAVAILABLE_ON_HOST


class NeedsCalibration(ProfileError):
    code = REASON_NEEDS_CALIBRATION


class UnsupportedModel(ProfileError):
    code = REASON_UNSUPPORTED_MODEL


class ConversionError(ProfileError):
    code = REASON_CONVERSION_ERROR


class InvalidOptions(ProfileError):
    code = REASON_INVALID_REQUEST


class UnknownProfile(ProfileError):
    code = REASON_UNKNOWN_PROFILE


class RuntimeLoadError(InferlabError):
    """The runtime refused to load a model (e.g. an operator without a kernel). Whose model
    decides the reason: the caller maps it (unsupported source, broken variant)."""

    code = REASON_CONVERSION_ERROR
