"""SDK methods of the validator (mixed into ``shared.sdk.Client``).

    report = await client.validate("digits@1.0.0", dataset="test.npz",
                                   requirements=["accuracy>=0.95", "p99_ms<=5"])
    print(report.ready, report.accuracy, report.report.criteria)

A local dataset file is uploaded to the object store first (content-addressed, under
``datasets/``); ``dataset://<name>`` names a dataset uploaded with ``put_dataset`` or the
dataset registered with model ``<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api as js_api

from shared.clients.host import ClientHost
from shared.contracts import subjects
from shared.contracts.base import decode, new_id
from shared.contracts.identity import ModelRef, is_valid_name
from shared.contracts.registry import DatasetStored, PutDataset
from shared.contracts.validation import (
    CHECKS,
    ModelValidated,
    Requirement,
    RequirementError,
    ValidateModel,
    ValidationErrored,
    ValidationProgress,
    parse_requirement,
)
from shared.errors import ArtifactNotFound, InferlabError, Rejected

if TYPE_CHECKING:
    from shared.bus import Bus

DATASET_SCHEME = "dataset"
NAMED_DATASET_PREFIX = "datasets/named"
_OUTCOME_TYPES = ("model.validated", "model.validation_failed")


def requirements_from(items: list[str | Requirement] | None) -> list[Requirement]:
    """Requirement texts (``"accuracy>=0.95"``) or structs, checked locally so a typo fails
    before anything is sent."""
    out = []
    for item in items or []:
        if isinstance(item, Requirement):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_requirement(item))
        else:
            raise RequirementError(f"a requirement is a text like 'accuracy>=0.95', not {item!r}")
    return out


class ValidationApi(ClientHost):
    """Methods that talk to the validator."""

    async def put_dataset(self, path: str | Path, name: str) -> str:
        """Upload a labelled ``.npz`` under a name (replacing what the name held) and return
        its ``dataset://<name>`` URI, usable wherever a dataset is taken."""
        if not is_valid_name(name):
            raise InferlabError(f"dataset name {name!r} must match [a-z0-9][a-z0-9_-]{{0,63}}", code="invalid_name")
        source = Path(path).expanduser()
        if not source.is_file():
            raise ArtifactNotFound(f"no such file: {source}")
        # Staged, then stored by the registry: only services write the object store.
        staged = await self.upload(source, prefix="datasets")
        stored = await self.bus.request(
            subjects.REGISTRY_DATASET_PUT, PutDataset(name=name, uri=staged.uri), DatasetStored, timeout=600.0
        )
        return stored.uri

    async def _dataset_uri(self, dataset: str | Path | None) -> str | None:
        if dataset is None:
            return None
        if isinstance(dataset, Path) or "://" not in str(dataset):
            stored = await self.upload(dataset, prefix="datasets")
            return stored.uri
        return str(dataset)

    async def validate(
        self,
        ref: str,
        *,
        dataset: str | Path | None = None,
        requirements: list[str | Requirement] | None = None,
        checks: list[str] | None = None,
        options: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float = 600.0,
        on_progress: Callable[[ValidationProgress], None] | None = None,
    ) -> ModelValidated | str:
        """Validate ``ref`` (on ``dataset``, else its registered one) against
        ``requirements``. With ``wait`` returns the ``model.validated`` event (``.ready``,
        ``.accuracy``, ``.report``) or raises ``Rejected`` with the reason when validation
        could not run; without, returns the command id."""
        ModelRef.parse(ref)
        reqs = requirements_from(requirements)
        unknown = [c for c in checks or [] if c not in CHECKS]
        if unknown:
            raise InferlabError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}", code="unknown_check")
        command = ValidateModel(
            event_id=new_id(),
            ref=ref,
            dataset_uri=await self._dataset_uri(dataset),
            requirements=reqs,
            checks=list(checks or []),
            options=dict(options or {}),
        )
        if not wait:
            await self.bus.publish(subjects.VALIDATE, command)
            return command.event_id

        outcome = await self.send_for_outcome(
            subjects.VALIDATE,
            command,
            outcomes=_OUTCOME_TYPES,
            timeout=timeout,
            progress=ValidationProgress,
            on_progress=on_progress,
        )
        if outcome["type"] == "model.validation_failed":
            errored = msgspec.convert(outcome, ValidationErrored)
            raise Rejected(errored.reason, errored.message, event=errored)
        return msgspec.convert(outcome, ModelValidated)

    async def report(self, ref: str, *, timeout: float = 5.0) -> ModelValidated | ValidationErrored | None:
        """The latest validation outcome of ``ref`` (resolved through the registry, so
        aliases work): a ``model.validated`` event, a ``model.validation_failed`` one when
        the latest attempt could not run, or None when it was never validated."""
        view = await self.get(ref)
        exact = view.record.ref
        name = view.record.name
        validated = await _latest_for_ref(self.bus, subjects.validated(name), ModelValidated, exact, timeout)
        errored = await _latest_for_ref(self.bus, subjects.validation_failed(name), ValidationErrored, exact, timeout)
        found = [latest for latest in (validated, errored) if latest is not None]
        if not found:
            return None
        return max(found, key=lambda item: item[0])[1]


Outcome = TypeVar("Outcome", ModelValidated, ValidationErrored)


async def _latest_for_ref(
    bus: Bus, subject: str, kind: type[Outcome], ref: str, timeout: float
) -> tuple[int, Outcome] | None:
    """(stream sequence, message) of the newest message on ``subject`` about ``ref``. The
    last message on the subject is read directly; only when it is about another version or
    variant of the model is the subject replayed."""
    try:
        last = await bus.js.get_last_msg("MODELS", subject)
    except nats.js.errors.NotFoundError:
        return None
    try:
        message = decode(last.data or b"", kind)
        if message.ref == ref:
            return int(last.seq or 0), message
    except msgspec.MsgspecError:
        pass
    best: tuple[int, Outcome] | None = None
    sub = await bus.js.subscribe(subject, ordered_consumer=True, deliver_policy=js_api.DeliverPolicy.ALL)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                break
            meta = msg.metadata
            replayed: Outcome | None
            try:
                replayed = decode(msg.data, kind)
            except msgspec.MsgspecError:
                replayed = None
            if replayed is not None and replayed.ref == ref:
                best = (meta.sequence.stream, replayed)
            if meta.num_pending == 0 or meta.sequence.stream >= (last.seq or 0):
                break
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass
    return best
