"""The thin typed wrapper over nats-py that every service and client uses.

- ``Bus.connect``: one connection with unlimited reconnects and typed publish/request helpers.
- ``Bus.ensure_streams``: the JetStream layout (MODELS, ALERTS, TELEMETRY, DEADLETTER, and
  UPLOADS, the staging area of pipelines' uploads: shared/artifacts.py).
- ``Bus.publish``: JetStream publish of a Struct with ``Nats-Msg-Id`` = ``event_id`` (dedupe)
  and CloudEvents binary-mode ``ce-*`` headers (shared/envelope.py) and the current W3C trace
  context (shared/tracing.py), awaiting the PubAck,
  retried while the server is reconnecting.
- ``Worker`` (shared/worker.py) runs the durable consumer loop on top of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.kv import KeyValue

from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import Message, codec, decode, encode
from shared.contracts.registry import ErrorReply
from shared.envelope import cloudevent_headers, event_source
from shared.errors import (
    InferlabError,
    InvalidDataset,
    InvalidReference,
    NotFound,
    RequestFailed,
    ServiceUnavailable,
    UnknownAlias,
    UnknownModel,
)
from shared.log import get_logger
from shared.tracing import inject as inject_trace

T = TypeVar("T")
R = TypeVar("R", bound=msgspec.Struct)

# What a JetStream API call raises while a cluster node fails over: the client is
# reconnecting, a stream's leader is being elected (no answer, or "temporarily unavailable").
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
)
TRANSIENT_RETRY_S = 60.0


class AuthenticationFailed(ServiceUnavailable):
    """NATS refused the credentials (a ServiceUnavailable, so callers that handle an absent
    server handle this too, but it is never retried)."""

    code = "nats_auth"


class PermissionDenied(InferlabError):
    """The NATS user may not publish or subscribe to a subject this call needs (the server's
    permissions, e.g. deploy/nats/nats-server.conf). The server only reports it on the side
    (an -ERR, the request itself gets no answer), so calls watch for it instead of waiting
    out their timeouts."""

    code = "permission_denied"


ERROR_CODE_HEADER = "Inferlab-Error-Code"
CORRELATION_HEADER = "Inferlab-Correlation-Id"
MSG_ID_HEADER = "Nats-Msg-Id"
INBOX_PREFIX = "_INBOX."
NO_RESPONDERS_GRACE_S = 2.0
UPLOADS_STREAM = "UPLOADS"
UPLOADS_SPACE = "upload.>"

# Error codes a request/reply endpoint may send back, mapped to the exception a client raises.
_ERRORS_BY_CODE: dict[str, type[InferlabError]] = {
    UnknownModel.code: UnknownModel,
    UnknownAlias.code: UnknownAlias,
    NotFound.code: NotFound,
    InvalidReference.code: InvalidReference,
    InvalidDataset.code: InvalidDataset,
}


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 0.0
    max_bytes: int = -1
    # Full: refuse new messages (an upload fails) rather than drop old ones (someone's
    # staged upload, read a moment later).
    discard_new: bool = False


def stream_specs(settings: Settings) -> tuple[StreamSpec, ...]:
    day = 86_400.0
    return (
        StreamSpec("MODELS", (subjects.MODELS_SPACE,), max_age_s=settings.models_max_age_days * day),
        StreamSpec("ALERTS", (subjects.ALERTS_SPACE,), max_age_s=settings.alerts_max_age_days * day),
        StreamSpec(
            "TELEMETRY",
            (subjects.TELEMETRY_SPACE,),
            max_age_s=settings.telemetry_max_age_hours * 3600.0,
            max_bytes=settings.telemetry_max_bytes,
        ),
        StreamSpec("DEADLETTER", (subjects.DEADLETTER_SPACE,), max_age_s=90 * day),
        StreamSpec(
            UPLOADS_STREAM,
            (UPLOADS_SPACE,),
            max_age_s=settings.uploads_max_age_hours * 3600.0,
            max_bytes=settings.uploads_max_bytes,
            discard_new=True,
        ),
    )


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca)
    if settings.nats_tls_cert:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


def connect_options(settings: Settings, *, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",") if s.strip()],
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        # Replies (request/reply, JetStream acks, ordered-consumer deliveries) arrive under
        # this user's own prefix, the only inboxes the server config lets it read.
        "inbox_prefix": settings.inbox_prefix,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options


class _ConnectionEvents:
    """The client's callbacks, from the first connect on: why a first connect failed, as the
    client reported it (nats-py keeps retrying a refused first connect internally; a timeout
    would hide the reason), permission denials, and disconnects in the log."""

    nc: NatsClient  # the client of the current attempt, set before it connects

    def __init__(self, log: Any) -> None:
        self.log = log
        self.denials: deque[tuple[float, str]] = deque(maxlen=64)
        self.refused: deque[BaseException] = deque(maxlen=16)  # bounded: outages may last for days
        self.auth_refused = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        if not self.nc.is_connected:
            self.refused.append(exc)
            if _is_auth_error(exc) or isinstance(exc, ssl.SSLError):
                self.auth_refused.set()  # credentials or certificates: retrying will not help
        if "permissions violation" in str(exc):
            self.denials.append((asyncio.get_running_loop().time(), str(exc)))
        if self.nc.is_connected or self.nc.is_reconnecting:
            self.log.warning("nats_error", error=str(exc), error_type=type(exc).__name__)

    async def on_disconnect(self) -> None:
        if not (self.nc.is_closed or self.nc.is_draining):
            self.log.warning("nats_disconnected")

    async def on_reconnect(self) -> None:
        url = self.nc.connected_url
        self.log.info("nats_reconnected", server=str(url.netloc if url else ""))


async def _first_connect(nc: NatsClient, options: dict[str, Any], events: _ConnectionEvents, *, timeout: float) -> None:
    """One connect attempt. nats-py retries a failed *first* connect forever when reconnects
    are unlimited; bound it so a missing server is reported, not waited for, and stop at the
    first refusal of the credentials."""
    connecting = asyncio.ensure_future(
        nc.connect(
            **options,
            error_cb=events.on_error,
            disconnected_cb=events.on_disconnect,
            reconnected_cb=events.on_reconnect,
        )
    )
    refusal = asyncio.ensure_future(events.auth_refused.wait())
    await asyncio.wait({connecting, refusal}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    refusal.cancel()
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        raise TimeoutError("no answer")
    connecting.result()


def _raise_if_refused(settings: Settings, url: str, refused: deque[BaseException]) -> None:
    """Raise when the server refused the credentials or the TLS handshake: waiting will not
    fix either. The server may close the socket before its "Authorization Violation" is read
    (a reset), so any refusal among the errors counts."""
    if any(_is_auth_error(error) for error in refused):
        # the password is never part of the message
        raise AuthenticationFailed(
            f"NATS at {url} refused user {settings.nats_user or '(none)'!r}: authorization violation "
            "(check INFERLAB_NATS_USER / INFERLAB_NATS_PASSWORD, _TOKEN or _CREDS)"
        ) from None
    tls_error = next((error for error in refused if isinstance(error, ssl.SSLError)), None)
    if tls_error is not None:
        raise ServiceUnavailable(
            f"TLS with NATS at {url} failed: {_describe(tls_error)} (check INFERLAB_NATS_TLS_CA, _CERT and _KEY)"
        ) from None


class Bus:
    """One NATS connection plus its JetStream context."""

    def __init__(self, nc: NatsClient, settings: Settings, *, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=10.0)
        self.settings = settings
        self.name = name
        self.source = event_source(name)
        self.log = get_logger(component="bus")
        # (loop time, server message) of recent permission violations on this connection.
        self.denials: deque[tuple[float, str]] = deque(maxlen=64)
        # A service's bus publishes each (subject, event id) once, ever (see publish).
        self.exactly_once = False
        self._announced: KeyValue | None = None
        self._ledger_lock = asyncio.Lock()

    def denied(self, since: float, fragment: str | tuple[str, ...] = "") -> str | None:
        """The newest permission violation reported since ``since`` (loop time) whose message
        contains ``fragment`` (or one of them), e.g. ``publish to "model.registered.x"``."""
        wanted = [f.lower() for f in ((fragment,) if isinstance(fragment, str) else fragment)]
        for at, message in reversed(self.denials):
            if at < since:
                return None
            if any(f in message.lower() for f in wanted):  # nats-py lower-cases the server's message
                return message
        return None

    def _permission_error(self, message: str) -> PermissionDenied:
        user = self.settings.nats_user or "(no user)"
        text = message.removeprefix("nats: ")
        return PermissionDenied(f"NATS user {user!r} is not allowed this: {text}")

    @classmethod
    async def connect(cls, settings: Settings, *, name: str, wait: float = 0.0) -> Bus:
        """Connect; with ``wait`` > 0 keep retrying that many seconds (services starting
        before NATS), else fail at once with a one-line ``ServiceUnavailable``."""
        log = get_logger(component="bus")
        events = _ConnectionEvents(log)
        options = connect_options(settings, name=name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.2
        while True:
            reachable = await asyncio.to_thread(_any_reachable, options["servers"])
            nc = events.nc = NatsClient()
            try:
                if not reachable:
                    raise ConnectionRefusedError("connection refused")
                await _first_connect(nc, options, events, timeout=settings.connect_timeout_s + 1.0)
                bus = cls(nc, settings, name=name)
                bus.denials = events.denials
                return bus
            except Exception as exc:  # nats raises several unrelated types here
                try:
                    await nc.close()
                except Exception:
                    pass
                reason = events.refused[-1] if events.refused else exc
                url = _redact_url(settings.nats_url)
                _raise_if_refused(settings, url, events.refused)
                if loop.time() >= deadline:
                    raise ServiceUnavailable(
                        f"cannot reach NATS at {url} ({_describe(reason)}); "
                        "start it with `inferlab up` or set INFERLAB_NATS_URL"
                    ) from None
                events.refused.clear()
                events.auth_refused.clear()
                log.info("nats_connect_retry", error=_describe(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception:
            await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- layout -------------------------------------------------------------------------

    async def ensure_streams(self) -> None:
        """Create the streams, or bring an existing one's limits in line with the settings.

        No platform stream accepts a ``Nats-Rollup`` header (one message with it would erase
        every other message on its subject, or the whole stream), nor deletes or purges
        through the API: facts, alerts and dead letters are an audit trail, and staged
        uploads expire by age alone."""
        for spec in stream_specs(self.settings):
            await self.ensure_stream(spec)

    async def ensure_stream(self, spec: StreamSpec) -> None:
        config = js_api.StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            num_replicas=self.settings.stream_replicas,
            max_age=spec.max_age_s or None,
            max_bytes=spec.max_bytes,
            max_msg_size=self.settings.max_message_bytes,
            duplicate_window=min(self.settings.duplicate_window_s, spec.max_age_s or float("inf")),
            discard=js_api.DiscardPolicy.NEW if spec.discard_new else js_api.DiscardPolicy.OLD,
            allow_rollup_hdrs=False,
            deny_delete=True,
            deny_purge=True,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def ensure_consumer(
        self,
        *,
        stream: str,
        durable: str,
        filter_subjects: list[str],
        ack_wait_s: float,
        max_deliver: int,
        max_ack_pending: int = 1000,
        deliver_new: bool = False,
    ) -> None:
        """Create or update a durable pull consumer. nats-py's ``pull_subscribe`` does not
        update an existing durable, so the config is always sent explicitly; setting ``name``
        selects the server's create-or-update API."""
        config = js_api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.NEW if deliver_new else js_api.DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            filter_subjects=filter_subjects if len(filter_subjects) > 1 else None,
            filter_subject=filter_subjects[0] if len(filter_subjects) == 1 else None,
            max_ack_pending=max_ack_pending,
            num_replicas=self.settings.stream_replicas,
        )
        await self.js.add_consumer(stream, config)

    # --- publishing -----------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        msg_id: str | None = None,
        timeout: float = 10.0,
        attempts: int = 20,
    ) -> js_api.PubAck:
        """Publish to JetStream and wait for the stream's ack. Retries while the connection
        is re-established (the same ``Nats-Msg-Id`` makes a retried publish a no-op).

        On a service's bus (``exactly_once``, set by its workers) every publish is also
        recorded in the ``announced`` KV bucket under a key derived from subject and event id,
        and a publish already recorded there is skipped: a handler redelivered at any later
        time (after a crash, after its ack wait) republishes nothing, however long after
        JetStream's duplicate window. The record is written after the stream's ack, so a
        crash between the two is covered by that window alone."""
        event_id = msg_id or message.event_id
        if not self.exactly_once:
            return await self._publish(subject, message, event_id, timeout=timeout, attempts=attempts)
        ledger = await self._ledger()
        key = announced_key(subject, event_id)
        try:
            entry = await self.retry_transient("reading the announced ledger", lambda: ledger.get(key))
            recorded = json.loads(entry.value or b"{}")
            self.log.debug("already_announced", subject=subject, event_id=event_id)
            return js_api.PubAck(stream=recorded.get("stream", ""), seq=int(recorded.get("seq", 0)), duplicate=True)
        except nats.js.errors.KeyNotFoundError:
            pass
        ack = await self._publish(subject, message, event_id, timeout=timeout, attempts=attempts)
        value = json.dumps({"stream": ack.stream, "seq": ack.seq, "subject": subject}).encode()
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):  # a sibling replica recorded it
            await self.retry_transient("recording the announcement", lambda: ledger.create(key, value))
        return ack

    async def _ledger(self) -> KeyValue:
        async with self._ledger_lock:
            if self._announced is None:
                self._announced = await self.retry_transient("opening the announced ledger", self._open_ledger)
            return self._announced

    async def _open_ledger(self) -> KeyValue:
        bucket = self.settings.announced_bucket
        try:
            return await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # a replica won the race
                await self.js.create_key_value(
                    js_api.KeyValueConfig(
                        bucket=bucket,
                        description="inferlab: which facts were published (exactly once past the duplicate window)",
                        history=1,
                        ttl=self.settings.announced_max_age_days * 86_400.0,
                        storage=js_api.StorageType.FILE,
                        replicas=self.settings.stream_replicas,
                    )
                )
            return await self.js.key_value(bucket)

    async def _publish(
        self, subject: str, message: Message, event_id: str, *, timeout: float, attempts: int
    ) -> js_api.PubAck:
        headers = cloudevent_headers(subject, message, event_id=event_id, source=self.source)
        headers[MSG_ID_HEADER] = event_id
        inject_trace(headers)
        if message.correlation_id:
            headers[CORRELATION_HEADER] = message.correlation_id
        payload = encode(message)
        delay = 0.1
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            started = loop.time()
            try:
                return await self._watching(
                    self.js.publish(subject, payload, timeout=timeout, headers=headers),
                    f'publish to "{subject}"',
                    started,
                )
            except (
                nats.errors.TimeoutError,
                nats.js.errors.NoStreamResponseError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.ConnectionClosedError,
            ) as exc:
                if attempt == attempts - 1 or self.nc.is_closed:
                    raise ServiceUnavailable(f"JetStream did not acknowledge {subject}: {_describe(exc)}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def unless_denied(self, call: Awaitable[T], fragment: str | tuple[str, ...]) -> T:
        """Await ``call``; raise PermissionDenied as soon as the server refuses a subject
        matching ``fragment`` (e.g. ``publish to "$JS.API.STREAM.PURGE.``)."""
        return await self._watching(call, fragment, asyncio.get_running_loop().time())

    async def _watching(self, call: Awaitable[T], fragment: str | tuple[str, ...], since: float) -> T:
        """Await ``call``, but raise PermissionDenied as soon as the server reports a
        violation matching ``fragment`` (a refused request is never answered: without this,
        the caller would wait out its timeout, and every retry's)."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.05)
                if done:
                    return task.result()
                message = self.denied(since, fragment)
                if message is not None:
                    raise self._permission_error(message)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def retry_transient(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        denied_if: str | tuple[str, ...] = 'publish to "$JS.API.',
    ) -> T:
        """Run ``attempt`` (an idempotent JetStream call) again while it fails the way calls
        fail during a node's failover, for up to TRANSIENT_RETRY_S: a pipeline reading or
        uploading while one node of a cluster dies must not fail. A permission violation
        matching ``denied_if`` ends it at once with PermissionDenied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRANSIENT_RETRY_S
        delay = 0.25
        while True:
            try:
                return await self._watching(attempt(), denied_if, loop.time())
            except TRANSIENT_ERRORS as exc:
                if self.nc.is_closed or loop.time() + delay > deadline:
                    raise ServiceUnavailable(
                        f"{what}: NATS did not answer for {TRANSIENT_RETRY_S:.0f}s ({_describe(exc)})"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)

    async def reply(self, command: Any, outcome: msgspec.Struct) -> None:
        """Send a command's outcome to its ``reply_to``, if it names an inbox. Only inboxes: a
        ``reply_to`` inside ``model.>`` would let a client make a service publish into the
        stream under a subject of its choosing. A waiter that is gone is not an error: the
        outcome is a fact in the stream anyway."""
        reply_to = getattr(command, "reply_to", None)
        if not reply_to or not reply_to.startswith(INBOX_PREFIX) or any(c in reply_to for c in " *>"):
            return
        try:
            await self.nc.publish(reply_to, encode(outcome))
        except Exception as exc:
            self.log.warning("reply_failed", error=str(exc))

    # --- request/reply --------------------------------------------------------------------

    async def request(self, subject: str, body: msgspec.Struct, reply: type[R], *, timeout: float = 10.0) -> R:
        """Call a micro endpoint; endpoint errors come back as the matching exception.

        "No responders" is asked again for up to two seconds: a replica that is (re)starting
        subscribes a moment after it is reachable, and a rolling restart should not fail a
        request that a sibling or the successor answers."""
        loop = asyncio.get_running_loop()
        payload = encode(body)
        deadline = loop.time() + min(timeout, NO_RESPONDERS_GRACE_S)
        delay = 0.05
        while True:
            try:
                msg = await self._watching(
                    self.nc.request(subject, payload, timeout=timeout), f'publish to "{subject}"', loop.time()
                )
                break
            except nats.errors.NoRespondersError:
                if loop.time() + delay > deadline:
                    raise ServiceUnavailable(
                        f"no service answers {subject}: is `inferlab up` (or that service) running?"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except nats.errors.TimeoutError:
                raise ServiceUnavailable(f"{subject} did not answer within {timeout:.0f}s") from None
        headers = msg.headers or {}
        if headers.get("Nats-Service-Error-Code"):
            error = _decode_error(msg.data, headers)
            kind = _ERRORS_BY_CODE.get(error.code)
            if kind is None:
                raise RequestFailed(error.message, code=error.code)
            exc = kind.__new__(kind)
            InferlabError.__init__(exc, error.message, code=error.code)
            raise exc
        return decode_plain(msg.data, reply)

    # --- reading streams (CLI/SDK) ----------------------------------------------------------

    async def follow(
        self,
        subject: str,
        *,
        replay: bool = False,
        idle_timeout: float | None = None,
        stored_only: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Yield ``(subject, data)`` of stream messages on ``subject`` through an ordered
        consumer: everything stored first when ``replay``, else only new ones.

        ``stored_only`` ends the iteration once every message stored when it began has been
        read (a snapshot, however slow the server); ``idle_timeout`` ends it after that many
        seconds without a message (None: never)."""
        policy = js_api.DeliverPolicy.ALL if replay else js_api.DeliverPolicy.NEW
        try:
            sub = await self.retry_transient(
                f"reading {subject}",
                lambda: self.js.subscribe(subject, ordered_consumer=True, deliver_policy=policy),
                denied_if='publish to "$JS.API.CONSUMER.CREATE.',
            )
        except PermissionDenied as exc:
            if replay or stored_only:
                raise PermissionDenied(
                    f"{exc.message}. Replaying stored messages needs a user that may read the streams "
                    "(e.g. admin); this one can follow new messages only"
                ) from None
            # A user that may not create stream consumers (the pipeline user) can still
            # subscribe to facts and alerts as they are published.
            async for item in self._follow_live(subject, idle_timeout):
                yield item
            return
        remaining: int | None = None
        if stored_only:
            info = await self.retry_transient(f"reading {subject}", sub.consumer_info)
            remaining = (info.num_pending or 0) + (info.delivered.consumer_seq if info.delivered else 0)
        try:
            while remaining is None or remaining > 0:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout if idle_timeout is not None else 3600)
                except nats.errors.TimeoutError:
                    if idle_timeout is not None:
                        return
                    continue
                if remaining is not None:
                    remaining -= 1
                yield msg.subject, msg.data
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    async def _follow_live(self, subject: str, idle_timeout: float | None) -> AsyncIterator[tuple[str, bytes]]:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await queue.put((msg.subject, msg.data))

        since = asyncio.get_running_loop().time()
        sub = await self.nc.subscribe(subject, cb=on_msg)
        try:
            await self.nc.flush()
            await asyncio.sleep(0.05)  # a refused subscription is reported right after the flush
            message = self.denied(since, f'subscription to "{subject}"')
            if message is not None:
                raise self._permission_error(message)
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=idle_timeout)
                except TimeoutError:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def announced_key(subject: str, event_id: str) -> str:
    """The ledger key of one publish: KV keys allow few characters, event ids may hold any."""
    return "e." + hashlib.sha256(f"{subject}\n{event_id}".encode()).hexdigest()


def decode_plain(data: bytes, kind: type[R]) -> R:
    """Decode a request or reply body that is not a message (no envelope)."""
    return codec.decode(data, kind)


def _decode_error(data: bytes, headers: dict[str, str]) -> ErrorReply:
    try:
        return decode_plain(data, ErrorReply)
    except msgspec.MsgspecError:
        return ErrorReply(
            code=headers.get(ERROR_CODE_HEADER, headers.get("Nats-Service-Error-Code", "error")),
            message=headers.get("Nats-Service-Error", "request failed"),
        )


def _any_reachable(servers: list[str]) -> bool:
    """A quick TCP probe, so that "nothing listens" fails in milliseconds, not a timeout."""
    for server in servers:
        parsed = urlparse(server if "://" in server else f"nats://{server}")
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=0.5):
                return True
        except OSError:
            continue
    return False


def _is_auth_error(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _redact_url(url: str) -> str:
    """Drop credentials embedded in a URL (nats://user:pass@host) before printing it."""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)


__all__ = ["AuthenticationFailed", "Bus", "PermissionDenied", "StreamSpec", "decode", "decode_plain", "stream_specs"]
