"""The members of ``shared.sdk.Client`` that its API mixins (benchmark, conversion,
validation) call, declared once for the type checker (at run time the mixins find them on
the Client they are mixed into), and the command round trip the mixins share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from shared.contracts.base import type_tag

if TYPE_CHECKING:
    from shared.artifacts import Progress, StagedUpload, StoredArtifact
    from shared.bus import Bus
    from shared.contracts.base import Command
    from shared.contracts.registry import ListModels, ModelList, ModelView

P = TypeVar("P", bound=msgspec.Struct)


class ClientHost:
    bus: Bus

    async def send_for_outcome(
        self,
        subject: str,
        command: Command,
        *,
        outcomes: tuple[str, ...],
        timeout: float,
        progress: type[P],
        on_progress: Callable[[P], None] | None,
    ) -> dict[str, Any]:
        """Send ``command`` and return its first reply whose type is one of ``outcomes``;
        replies of the ``progress`` type go to ``on_progress`` on the way."""
        progress_type = type_tag(progress)

        def on_reply(reply: dict[str, Any]) -> None:
            if on_progress is not None and reply.get("type") == progress_type:
                on_progress(msgspec.convert(reply, progress))

        replies = await self.send_and_collect(
            subject,
            command,
            timeout=timeout,
            until=lambda got: any(r.get("type") in outcomes for r in got),
            on_reply=on_reply,
        )
        return next(r for r in replies if r.get("type") in outcomes)

    if TYPE_CHECKING:

        async def send(self, subject: str, command: Command) -> str: ...

        async def send_and_collect(
            self,
            subject: str,
            command: Command,
            *,
            timeout: float,
            until: Callable[[list[dict[str, Any]]], bool],
            on_reply: Callable[[dict[str, Any]], None] | None = None,
        ) -> list[dict[str, Any]]: ...

        async def upload(
            self, path: str | Path, *, prefix: str = "sha256", progress: Progress | None = None
        ) -> StoredArtifact | StagedUpload: ...

        async def get(self, ref: str) -> ModelView: ...

        async def list(self, filters: ListModels | None = None, **kwargs: Any) -> ModelList: ...
