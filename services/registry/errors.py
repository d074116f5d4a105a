"""The registry's exceptions, in the one hierarchy (shared/errors.py). ``code`` is the
``RejectionReason`` value that ``model.rejected`` carries; the service turns a ``Rejection``
into that event in one place (failures.py)."""

from __future__ import annotations

from shared.contracts.registry import RejectionReason
from shared.errors import InferlabError


class Rejection(InferlabError):
    """A ``model.register`` that can never succeed as sent. ``sha256`` is the artifact's, once
    it was fetched (the rejection event carries it)."""

    code = RejectionReason.INVALID_COMMAND.value

    def __init__(self, reason: RejectionReason, message: str, sha256: str = "") -> None:
        super().__init__(message, code=reason.value)
        self.sha256 = sha256

    @property
    def reason(self) -> RejectionReason:
        return RejectionReason(self.code)


class VerificationError(Rejection):
    """The artifact itself fails verification (verify.py): not ONNX, invalid, external data
    that escapes its folder or is missing, shape inference that fails."""

    code = RejectionReason.INVALID_MODEL.value

    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(reason, message)


class LifecycleRefusal(InferlabError):
    """A ``model.archive`` / ``model.delete`` that can never succeed as sent; it becomes
    ``model.lifecycle_refused`` (failures.py)."""

    code = "lifecycle_refused"


class UnknownVersion(LifecycleRefusal):
    code = "unknown_model"


class AliasInUse(LifecycleRefusal):
    """An alias points at the version: archiving or deleting it would leave ``name@alias``
    serving nothing (or an archived model) without anyone having decided so."""

    code = "alias_in_use"
