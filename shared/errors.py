"""Precise exception types. Each carries a stable machine-readable ``code`` (the ``reason`` of
an error event) and a human message; service edges map them to error events, the CLI to one
line on stderr."""

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
