"""The base of ``shared.sdk.Client`` and of its API mixins (benchmark, conversion,
validation): sending commands and collecting their replies, plus the Client members the mixins
call, declared for the type checker (at run time the mixins find them on the Client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from shared.contracts.base import Command, new_id, type_tag
from shared.errors import WaitTimeout

if TYPE_CHECKING:
    from shared.artifacts import Progress, StagedUpload, StoredArtifact
    from shared.bus import Bus
    from shared.contracts.registry import ListModels, ModelList, ModelView

P = TypeVar("P", bound=msgspec.Struct)


class ClientHost:
    bus: Bus

    async def send(self, subject: str, command: Command) -> str:
        """Publish a command to its stream; returns its event id."""
        if not command.event_id:
            command.event_id = new_id()
        await self.bus.publish(subject, command)
        return command.event_id

    async def send_and_wait(
        self, subject: str, command: Command, *, timeout: float = 300.0, replies: int = 1
    ) -> dict[str, Any]:
        """Publish ``command`` with a private ``reply_to`` inbox and return the first reply
        (a service answers a command's outcome there, even a no-op's)."""
        collected = await self.send_and_collect(
            subject, command, timeout=timeout, until=lambda got: len(got) >= replies
        )
        return collected[0]

    async def send_and_collect(
        self,
        subject: str,
        command: Command,
        *,
        timeout: float,
        until: Callable[[list[dict[str, Any]]], bool],
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        inbox = self.bus.nc.new_inbox()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def collect(msg: Any) -> None:
            # Only what was published to the inbox itself: a JetStream push delivery aimed at
            # it carries the stream's original subject, and must not pass for an answer.
            if msg.subject == inbox:
                await queue.put(msg.data)

        sub = await self.bus.nc.subscribe(inbox, cb=collect)
        try:
            command.reply_to = inbox
            await self.send(subject, command)
            got: list[dict[str, Any]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not until(got):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"no answer to {subject} within {timeout:.0f}s (command {command.event_id} is queued "
                        "and will be processed when the service runs)"
                    )
                try:
                    data = await asyncio.wait_for(queue.get(), timeout=remaining)
                except TimeoutError:
                    continue
                reply = json.loads(data)
                got.append(reply)
                if on_reply:
                    on_reply(reply)
            return got
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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

        async def upload(
            self, path: str | Path, *, prefix: str = "sha256", progress: Progress | None = None
        ) -> StoredArtifact | StagedUpload: ...

        async def get(self, ref: str) -> ModelView: ...

        async def list(self, filters: ListModels | None = None, **kwargs: Any) -> ModelList: ...
