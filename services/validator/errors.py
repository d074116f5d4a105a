"""The validator's exceptions, all in the one hierarchy of ``shared.errors``. Each ``code`` is
the ``reason`` that ``model.validation_failed`` carries (services/validator/failures.py)."""

from __future__ import annotations

from shared.errors import InferlabError, NotFound


class ValidationFailure(InferlabError):
    """Validation cannot run. Also wraps another error of the hierarchy with the context it
    happened in (which model, which dataset), keeping that error's ``code``."""

    code = "validation_failed"

    @classmethod
    def within(cls, context: str, exc: InferlabError) -> ValidationFailure:
        """``exc`` as seen from ``context`` ("dataset d.npz"): same code, message prefixed."""
        return cls(f"{context}: {exc.message}", code=exc.code)


class UnsupportedFormat(ValidationFailure):
    """The artifact is not an ONNX model (a TensorRT engine): validate its parent instead."""

    code = "unsupported_format"


class UnknownParent(NotFound):
    code = "unknown_parent"


class UnknownDataset(ValidationFailure):
    code = "unknown_dataset"


class CheckFailed(ValidationFailure):
    """A check met data it cannot handle (a numpy error on odd outputs): deterministic, so
    reported rather than retried."""

    code = "check_failed"


class OptionsError(InferlabError):
    code = "invalid_options"


class UnknownCheck(InferlabError):
    code = "unknown_check"


class PolicyError(InferlabError):
    code = "invalid_policy"


class ModelLoadError(InferlabError):
    code = "model_load_failed"


class InferenceError(InferlabError):
    code = "inference_failed"


class OutputError(InferlabError):
    """The outputs cannot be read as the task needs (no class scores, unknown layout)."""

    code = "unsupported_outputs"
