"""``Client.archive`` and ``Client.delete``: the lifecycle commands, answered by the registry
with the fact it published (``model.archived`` / ``model.deleted``) or a precise refusal.
They need a user allowed to publish ``model.archive`` / ``model.delete`` (admin in the shipped
NATS config; a pipeline is refused: docs/reliability.md)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from shared.clients.host import ClientHost
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.identity import BASE_VARIANT, ModelRef
from shared.contracts.registry import ArchiveModel, DeleteModel, LifecycleRefused, ModelArchived, ModelDeleted
from shared.errors import InferlabError, InvalidReference

T = TypeVar("T", ModelArchived, ModelDeleted)


def _exact(ref: str) -> ModelRef:
    parsed = ModelRef.parse(ref)
    if parsed.version is None or parsed.alias is not None or parsed.variant != BASE_VARIANT:
        raise InvalidReference(ref, "archive and delete take an exact version (name@1.0.0) and act on its variants too")
    return parsed


class LifecycleRefusedError(InferlabError):
    """The registry refused an archive or delete (``code``: ``unknown_model``, ``alias_in_use``)."""

    def __init__(self, refused: LifecycleRefused) -> None:
        super().__init__(refused.message, code=refused.reason)
        self.refused = refused


class LifecycleApi(ClientHost):
    async def archive(self, ref: str, *, timeout: float = 60.0) -> ModelArchived:
        """Archive ``name@version`` and its variants: kept, but out of listings and ``find``."""
        parsed = _exact(ref)
        assert parsed.version is not None
        command = ArchiveModel(event_id=new_id(), name=parsed.name, version=parsed.version)
        reply = await self.send_and_wait(subjects.ARCHIVE, command, timeout=timeout)
        return _outcome(reply, ModelArchived)

    async def delete(self, ref: str, *, purge_history: bool = False, timeout: float = 120.0) -> ModelDeleted:
        """Delete ``name@version``, its variants and the stored objects no other version uses;
        with ``purge_history`` the benchmarker also deletes its history rows."""
        parsed = _exact(ref)
        assert parsed.version is not None
        command = DeleteModel(event_id=new_id(), name=parsed.name, version=parsed.version, purge_history=purge_history)
        reply = await self.send_and_wait(subjects.DELETE, command, timeout=timeout)
        return _outcome(reply, ModelDeleted)


def _outcome(reply: dict[str, Any], kind: type[T]) -> T:
    if reply.get("type") == "model.lifecycle_refused":
        raise LifecycleRefusedError(msgspec.convert(reply, LifecycleRefused))
    return msgspec.convert(reply, kind)
