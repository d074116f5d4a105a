"""Which models production telemetry may speak of: those the registry knows. A batch for a
name, version or variant that was never registered (a typo in a server's configuration) is
refused with a precise reason instead of being stored where nobody looks."""

from __future__ import annotations

import time

from shared.contracts.benchmark import InferenceTelemetry
from shared.contracts.identity import format_ref
from shared.errors import InvalidReference, NotFound, ServiceUnavailable
from shared.log import get_logger
from shared.sdk import Client
from shared.worker import PoisonMessage

# While the registry does not answer, telemetry is accepted unchecked for this long before
# asking again: production monitoring must not stop because the registry restarts.
UNCHECKED_WHILE_UNREACHABLE_S = 300.0


class RegisteredSources:
    def __init__(self, registry: Client) -> None:
        self.registry = registry
        self.log = get_logger(component="telemetry-sources")
        self._known: set[tuple[str, str, str]] = set()
        self._unchecked_until = 0.0

    async def require(self, message: InferenceTelemetry) -> None:
        """Return when the registry knows the batch's model (or cannot be asked); raise
        PoisonMessage (reason ``unknown_model``) when it says it does not."""
        key = (message.name, message.version, message.variant)
        if key in self._known or time.monotonic() < self._unchecked_until:
            return
        ref = format_ref(*key)
        try:
            await self.registry.get(ref)
        except (NotFound, InvalidReference) as exc:
            raise PoisonMessage(
                f"telemetry for {ref}, which is not registered ({exc.message}); register it first "
                "or fix the name, version and variant the server reports",
                reason="unknown_model",
            ) from exc
        except ServiceUnavailable as exc:
            self._unchecked_until = time.monotonic() + UNCHECKED_WHILE_UNREACHABLE_S
            self.log.warning("telemetry_unchecked", why=str(exc), for_s=UNCHECKED_WHILE_UNREACHABLE_S, ref=ref)
            return
        self._known.add(key)
