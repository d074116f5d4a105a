"""The members of ``shared.sdk.Client`` that its API mixins (benchmark, conversion,
validation) call, declared once for the type checker. At run time the mixins find them on
the Client they are mixed into."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.artifacts import Progress, StagedUpload, StoredArtifact
    from shared.bus import Bus
    from shared.contracts.base import Command
    from shared.contracts.registry import ListModels, ModelList, ModelView


class ClientHost:
    bus: Bus

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
