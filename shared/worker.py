"""The durable consumer loop every service runs.

All replicas of a service bind to one durable pull consumer, so adding replicas adds
throughput and a killed replica's unacknowledged messages are redelivered to the others.

For each message:

1. Route by subject to a (message type, handler) pair; decode with msgspec. A message that
   cannot be routed, is over the size limit or cannot be decoded is *terminated* and copied
   to ``deadletter.<service>`` with the error, and ``alerts.pipeline.deadletter.<service>``
   is raised: poison never loops.
2. Run the handler with ``in_progress()`` heartbeats on a timer, so long work is not
   redelivered to another replica while it is still running.
3. Ack only after the handler returned, i.e. after every output it published was
   acknowledged by JetStream. A handler that raises is nak'ed with a growing delay; on its
   ``max_deliver``-th failure the message is dead-lettered instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
from nats.aio.msg import Msg

from shared.bus import Bus
from shared.contracts import subjects
from shared.contracts.alerts import DeadLetter, DeadLetterAlert
from shared.contracts.base import Message, decode, with_envelope
from shared.envelope import message_type
from shared.errors import ServiceUnavailable
from shared.log import correlation, get_logger
from shared.tracing import failed, handling

M = TypeVar("M", bound=Message)

DEADLETTER_PAYLOAD_BYTES = 64 * 1024
# Headers that may carry credentials are not copied into dead letters.
_SECRET_HEADER = re.compile(r"auth|token|secret|passw|key|cookie|credential|signature", re.IGNORECASE)


@dataclass
class Delivery(Generic[M]):
    """A decoded message and what the handler may need of its JetStream delivery."""

    message: M
    subject: str
    stream: str
    stream_seq: int
    deliveries: int
    raw: Msg = field(repr=False)

    async def in_progress(self) -> None:
        with contextlib.suppress(Exception):
            await self.raw.in_progress()


Handler = Callable[[Delivery[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """Messages whose subject matches ``subject`` (NATS wildcards) decode as ``kind``."""

    subject: str
    kind: type[Message]
    handler: Handler
    # Called (best effort) with the raw payload and the error when a message on this route
    # cannot be decoded, before it is dead-lettered: the registry answers the sender of a
    # malformed command it can attribute with a precise rejection.
    undecodable: Callable[[bytes, str], Awaitable[None]] | None = None

    def matches(self, subject: str) -> bool:
        return subject_matches(self.subject, subject)


def subject_matches(pattern: str, subject: str) -> bool:
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if token != "*" and not fnmatch.fnmatchcase(s_tokens[i], token):
            return False
    return len(p_tokens) == len(s_tokens)


class PoisonMessage(Exception):
    """The message can never be handled (undecodable, unroutable, too large). A handler may
    raise it too, for input it can tell no retry will fix: the message is dead-lettered at
    once instead of being retried ``max_deliver`` times, with ``reason`` (a machine code, e.g.
    the error's ``code``) as the dead letter's ``details["reason"]``."""

    def __init__(self, message: str, *, reason: str = "poison") -> None:
        super().__init__(message)
        self.reason = reason


class Worker:
    """Runs one durable consumer for a service until ``stop()``."""

    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        stream: str,
        durable: str,
        routes: list[Route],
        concurrency: int = 1,
        ack_wait_s: float | None = None,
        max_deliver: int | None = None,
        deliver_new: bool = False,
    ) -> None:
        settings = bus.settings
        self.bus = bus
        # What a handler publishes is published once, also when it runs again on a
        # redelivery long after the stream's duplicate window (Bus.publish).
        bus.exactly_once = True
        self.service = service
        self.stream = stream
        self.durable = durable
        self.routes = routes
        self.concurrency = max(1, concurrency)
        self.ack_wait_s = ack_wait_s or settings.ack_wait_s
        self.max_deliver = max_deliver or settings.max_deliver
        self.deliver_new = deliver_new
        self.log = get_logger(component="worker", durable=durable)
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.failed = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stopping.set()

    async def _ensure_consumer(self) -> None:
        await self.bus.ensure_consumer(
            stream=self.stream,
            durable=self.durable,
            filter_subjects=[r.subject for r in self.routes],
            ack_wait_s=self.ack_wait_s,
            max_deliver=self.max_deliver,
            deliver_new=self.deliver_new,
        )

    async def run(self) -> None:
        await self._ensure_consumer()
        sub = await self.bus.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        # A message whose handling kills the process (OOM, segfault in a native library) never
        # reaches our own failure path; JetStream announces it when max_deliver is exhausted.
        advisory = await self.bus.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.durable}", cb=self._on_max_deliveries
        )
        self.log.info("consumer_started", stream=self.stream, subjects=[r.subject for r in self.routes])
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch = await sub.fetch(min(free, self.bus.settings.fetch_batch), timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue  # an empty fetch is not an error
                except (
                    nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError,
                    nats.errors.ConnectionDrainingError,
                ) as exc:
                    if self.bus.nc.is_closed:
                        break
                    self.log.warning("fetch_interrupted", error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                except Exception as exc:  # e.g. consumer deleted while the server restarted
                    self.log.warning("fetch_failed", error=str(exc), error_type=type(exc).__name__)
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(Exception):
                        await self._ensure_consumer()
                    continue
                for msg in batch:
                    task = asyncio.create_task(self._process(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
        finally:
            if self._inflight:
                # Let in-flight work finish (its outputs and acks); whatever does not finish
                # is redelivered after ack_wait.
                await asyncio.wait(self._inflight, timeout=self.ack_wait_s)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await advisory.unsubscribe()
            self.log.info("consumer_stopped", handled=self.handled, failed=self.failed)

    # --- one message ----------------------------------------------------------------------

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        stream_seq = meta.sequence.stream
        fallback_id = f"{meta.stream.lower()}-{stream_seq}"
        try:
            route, message = self._decode(msg, fallback_id)
        except PoisonMessage as exc:
            await self._answer_undecodable(msg, exc)
            await self._dead_letter(msg, exc.__cause__ or exc, reason="undecodable")
            return
        delivery = Delivery(
            message=message,
            subject=msg.subject,
            stream=meta.stream,
            stream_seq=stream_seq,
            deliveries=meta.num_delivered,
            raw=msg,
        )
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        started = time.perf_counter()
        with (
            correlation(message.correlation_id, subject=msg.subject, event_id=message.event_id),
            handling(self.service, msg.subject, message_type(message), message.event_id, msg.headers) as span,
        ):
            try:
                await self._run_handler(route, delivery)
            except asyncio.CancelledError:
                raise
            except PoisonMessage as exc:  # the handler knows no retry can succeed
                heartbeat.cancel()
                failed(span, exc)
                await self._dead_letter(msg, exc.__cause__ or exc, reason=exc.reason)
                return
            except Exception as exc:
                self.failed += 1
                failed(span, exc)
                await self._on_failure(msg, exc, meta.num_delivered)
                return
            finally:
                heartbeat.cancel()
            try:
                await msg.ack()
            except Exception as exc:  # connection lost: the message is redelivered
                self.log.warning("ack_failed", error=str(exc))
                return
            self.handled += 1
            self.log.debug("handled", duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _run_handler(self, route: Route, delivery: Delivery[Any]) -> None:
        """Run the handler; while a service it depends on does not answer (a registry being
        restarted), wait and run it again, holding the message (heartbeats continue) instead of
        spending its deliveries: a dependency that is down is not the message's fault."""
        waited = 0.0
        delay = 0.5
        limit = self.bus.settings.dependency_wait_s
        while True:
            try:
                await route.handler(delivery)
                return
            except ServiceUnavailable as exc:
                if waited >= limit or self._stopping.is_set() or self.bus.nc.is_closed:
                    raise
                self.log.warning("dependency_unavailable", error=str(exc), retry_in_s=delay, waited_s=round(waited, 1))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 10.0)

    def _decode(self, msg: Msg, fallback_id: str) -> tuple[Route, Message]:
        route = next((r for r in self.routes if r.matches(msg.subject)), None)
        if route is None:
            raise PoisonMessage(f"no handler for subject {msg.subject}")
        limit = self.bus.settings.max_message_bytes
        if len(msg.data) > limit:
            raise PoisonMessage(f"message of {len(msg.data)} bytes is over the {limit}-byte limit")
        try:
            message = decode(msg.data, route.kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PoisonMessage(f"cannot decode {route.kind.__name__}: {exc}") from exc
        return route, with_envelope(message, event_id=fallback_id)

    async def _answer_undecodable(self, msg: Msg, exc: PoisonMessage) -> None:
        route = next((r for r in self.routes if r.matches(msg.subject)), None)
        if route is None or route.undecodable is None or len(msg.data) > self.bus.settings.max_message_bytes:
            return
        try:
            await route.undecodable(msg.data, str(exc))
        except Exception as answer_exc:  # the dead letter still records it
            self.log.warning("undecodable_answer_failed", error=str(answer_exc)[:300])

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(self.ack_wait_s / 3.0, 0.5)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _on_failure(self, msg: Msg, exc: Exception, deliveries: int) -> None:
        if deliveries >= self.max_deliver:
            self.log.error(
                "handler_failed_finally", error=str(exc), error_type=type(exc).__name__, deliveries=deliveries
            )
            await self._dead_letter(msg, exc, reason="max_deliver")
            return
        delay = min(0.5 * 2 ** (deliveries - 1), 30.0)
        self.log.warning(
            "handler_failed", error=str(exc), error_type=type(exc).__name__, deliveries=deliveries, retry_in_s=delay
        )
        with contextlib.suppress(Exception):
            await msg.nak(delay=delay)

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        try:
            info = json.loads(advisory.data)
            seq = int(info["stream_seq"])
            stored = await self.bus.js.get_msg(self.stream, seq)
        except Exception as exc:
            self.log.error("max_deliveries_advisory_unreadable", error=str(exc))
            return
        deliveries = int(info.get("deliveries", self.max_deliver))
        error = f"gave up after {deliveries} deliveries without an outcome (the handler never finished)"
        self.log.error("max_deliveries", subject=stored.subject, stream_seq=seq, deliveries=deliveries)
        await self._record_dead_letter(
            subject=stored.subject or "",
            data=stored.data or b"",
            headers=stored.headers or {},
            stream=self.stream,
            seq=seq,
            deliveries=deliveries,
            error_type="MaxDeliveriesExceeded",
            error=error,
            reason="max_deliver_advisory",
        )

    async def _dead_letter(self, msg: Msg, exc: BaseException, *, reason: str) -> None:
        meta = msg.metadata
        recorded = await self._record_dead_letter(
            subject=msg.subject,
            data=msg.data,
            headers=msg.headers or {},
            stream=meta.stream,
            seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            error_type=type(exc).__name__,
            error=str(exc) or type(exc).__name__,
            reason=reason,
        )
        if not recorded:
            # Could not record it: leave the message to be redelivered rather than lose it.
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)
            return
        with contextlib.suppress(Exception):
            await msg.term()

    async def _record_dead_letter(
        self,
        *,
        subject: str,
        data: bytes,
        headers: dict[str, str],
        stream: str,
        seq: int,
        deliveries: int,
        error_type: str,
        error: str,
        reason: str,
    ) -> bool:
        """Publish the dead letter and its alert; ids derive from the consumer and the stream
        position, so a second report of the same message by this consumer (another replica,
        the advisory) dedupes, while each of several consumers of one poison message (the
        converter and the benchmarker both read ``model.registered.*``) records its own."""
        key = f"{self.durable}-{stream.lower()}-{seq}"
        letter = DeadLetter(
            event_id=f"dl-{key}",
            service=self.service,
            subject=subject,
            stream=stream,
            stream_seq=seq,
            deliveries=deliveries,
            error_type=error_type,
            error=error[:4000],
            payload=data[:DEADLETTER_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
            payload_bytes=len(data),
            headers={k: v for k, v in headers.items() if not _SECRET_HEADER.search(k)},
            details={"reason": reason},
        )
        alert = DeadLetterAlert(
            event_id=f"dla-{key}",
            correlation_id=letter.event_id,
            severity="critical",
            name=self.service,
            summary=f"{self.service} dead-lettered a message on {subject}: {error[:200]}",
            subject=subject,
            error=error[:4000],
            deliveries=deliveries,
            stream_seq=seq,
        )
        self.log.error("dead_lettered", subject=subject, stream_seq=seq, error=error[:500], reason=reason)
        try:
            await self.bus.publish(subjects.deadletter(self.service), letter)
            await self.bus.publish(subjects.deadletter_alert(self.service), alert)
        except Exception as pub_exc:
            self.log.error("dead_letter_publish_failed", error=str(pub_exc))
            return False
        self.dead_lettered += 1
        return True
