"""The benchmarker's own errors. Each ``code`` is the ``reason`` its failure event carries
(failures.py); the measuring runtime's errors (``LoadFailed``, ``InvalidConfig``, ...) stay in
runners.py, beside the code that raises them in the measuring child."""

from __future__ import annotations

from shared.contracts.registry import INPUTS_NEED_SPEC
from shared.errors import InferlabError


class InputsNeedSpec(InferlabError):
    """The registry could not resolve how to feed the model, and the request gives neither
    shapes nor a dataset."""

    code = INPUTS_NEED_SPEC


class MeasurementFailed(InferlabError):
    """The model could not be measured at all (it does not load, or its runtime crashed, hung
    or ran out of memory): final for these bytes. ``code`` is its cause's (``load_failed``,
    ``crashed``, ``timed_out``, ``out_of_memory``, an artifact error's)."""

    code = "run_failed"


class NothingMeasured(InferlabError):
    """Every configuration of the sweep was skipped; ``code`` is the last skip's reason."""

    code = "run_failed"


class InvalidTelemetry(InferlabError):
    """A telemetry batch no retry can fix: dead-lettered with this code as its reason."""

    code = "invalid_telemetry"


class InvalidRequest(InferlabError):
    """An endpoint request outside what the endpoint accepts."""

    code = "invalid_request"


class InvalidSetting(InferlabError):
    code = "invalid_setting"


class HistoryLocked(InferlabError):
    """Another process holds the history file open."""

    code = "history_locked"
