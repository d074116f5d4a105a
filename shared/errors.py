"""The one exception hierarchy of inferlab. Every error raised on purpose derives from
``InferlabError`` and carries a stable machine-readable ``code`` (the ``reason`` of the failure
event it becomes) and a human ``message``. Service-specific classes live in
``services/<svc>/errors.py``; each service turns them into its failure event in one place,
``services/<svc>/failures.py: failure_event``; the CLI prints one line on stderr.

    Exception
     └── InferlabError                        code: error
          ├── InvalidReference                invalid_ref
          ├── NotFound                        not_found
          │    ├── UnknownModel               unknown_model
          │    └── UnknownAlias               unknown_alias
          ├── ArtifactError                   artifact_error
          │    ├── ArtifactNotFound           artifact_not_found
          │    ├── ArtifactTooLarge           too_large
          │    ├── IntegrityError             sha256_mismatch
          │    ├── ImportNotAllowed           import_not_allowed (or invalid_uri)
          │    └── FetchFailed                fetch_failed
          ├── InvalidDataset                  invalid_dataset
          ├── InputError                      per instance (invalid_input_spec, unsupported_model, ...)
          ├── ServiceUnavailable              unavailable
          ├── RequestFailed                   request_failed
          ├── WaitTimeout                     timeout
          ├── Rejected                        per instance: the rejection reason a client received
          ├── NativeFailure                   native_failure
          │    ├── NativeCrash                crashed
          │    ├── NativeTimeout              timed_out
          │    └── NativeOutOfMemory          out_of_memory
          ├── services/registry/errors.py: Rejection          per instance (a RejectionReason)
          │    └── services/registry/errors.py: VerificationError
          ├── services/converter/errors.py: ConversionFailure per instance (a REASON_* of conversion)
          ├── services/converter/errors.py: ProfileError      conversion_error
          │    ├── NotApplicable              not_applicable
          │    ├── Unavailable                unavailable_on_host
          │    ├── NeedsCalibration           needs_calibration_data
          │    ├── UnsupportedModel           unsupported_model
          │    ├── ConversionError            conversion_error
          │    ├── InvalidOptions             invalid_request
          │    └── UnknownProfile             unknown_profile
          ├── services/converter/errors.py: RuntimeLoadError  conversion_error
          ├── services/benchmarker/errors.py: BenchmarkError
          ├── services/validator/errors.py: ValidationFailure
          ├── services/validator/errors.py: ModelLoadError
          ├── services/validator/errors.py: InferenceError
          ├── services/validator/errors.py: OutputError
          ├── services/validator/errors.py: OptionsError
          └── services/validator/errors.py: PolicyError

A class whose code depends on the case (``InputError``, ``Rejection``, ``ConversionFailure``)
takes it per instance; every other class names its code once, as a class attribute.
"""

from __future__ import annotations


class InferlabError(Exception):
    """Base of every error that inferlab raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidReference(InferlabError):
    code = "invalid_ref"

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"invalid model reference {text!r}: {why}")
        self.text = text


class NotFound(InferlabError):
    code = "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownAlias(NotFound):
    code = "unknown_alias"


class ArtifactError(InferlabError):
    """Fetching, storing or verifying an artifact failed."""

    code = "artifact_error"


class ArtifactNotFound(ArtifactError):
    code = "artifact_not_found"


class ArtifactTooLarge(ArtifactError):
    code = "too_large"

    def __init__(self, size: int, limit: int, what: str = "artifact") -> None:
        super().__init__(f"{what} is larger than the limit: {size} bytes > {limit} bytes")
        self.size = size
        self.limit = limit


class IntegrityError(ArtifactError):
    code = "sha256_mismatch"

    def __init__(self, expected: str, actual: str, what: str = "artifact") -> None:
        super().__init__(f"{what} sha256 is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class ImportNotAllowed(ArtifactError):
    """A URI whose scheme or path the import policy refuses."""

    code = "import_not_allowed"


class FetchFailed(ArtifactError):
    code = "fetch_failed"


class InvalidDataset(InferlabError):
    code = "invalid_dataset"


class InputError(InferlabError):
    """Inputs cannot be built for a model (non-tensor input, unknown rank, data that does not
    fit the declared shapes, no size that runs); ``code`` says which (shared/inputs.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class ServiceUnavailable(InferlabError):
    """NATS, or the service that answers a request, cannot be reached."""

    code = "unavailable"


class RequestFailed(InferlabError):
    """A request/reply endpoint answered with an error."""

    code = "request_failed"


class WaitTimeout(InferlabError):
    code = "timeout"


class Rejected(InferlabError):
    """A command was refused; ``code`` is the rejection reason from the error event."""

    code = "rejected"

    def __init__(self, code: str, message: str, *, event: object | None = None) -> None:
        super().__init__(message, code=code)
        self.event = event


class NativeFailure(InferlabError):
    """A native call on a user's model (ONNX Runtime, onnx, a quantiser, TensorRT) did not
    return: its sandbox worker crashed, ran out of time or out of memory (shared/sandbox.py).
    Final for that model and step: the same bytes would fail the same way again."""

    code = "native_failure"

    def __init__(self, message: str, *, step: str = "", shapes: dict[str, list[int]] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.shapes = dict(shapes or {})


class NativeCrash(NativeFailure):
    """The worker died by a signal (SIGSEGV, SIGABRT, ...) or exited without a result."""

    code = "crashed"

    def __init__(
        self,
        message: str,
        *,
        signal_name: str = "",
        signal_number: int | None = None,
        exit_code: int | None = None,
        step: str = "",
        shapes: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__(message, step=step, shapes=shapes)
        self.signal_name = signal_name
        self.signal_number = signal_number
        self.exit_code = exit_code


class NativeTimeout(NativeFailure):
    """The call ran past its wall-clock timeout or its CPU-time limit; the worker was killed."""

    code = "timed_out"


class NativeOutOfMemory(NativeFailure):
    """The call needed more memory than its limit (MemoryError, std::bad_alloc, an allocation
    refused under RLIMIT_AS, or the kernel's SIGKILL)."""

    code = "out_of_memory"
