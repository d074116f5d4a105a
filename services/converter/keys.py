"""Names and idempotency keys of conversions.

The key is a sha256 over everything that decides a conversion's outcome: the source's
sha256, the profile, its normalised options, the tolerances, the input data (dataset URI,
calibration data sha256, shapes, samples, seed). The same key means the same conversion, so a
redelivered or repeated command re-announces the variant already registered instead of
registering another, and every event a conversion publishes takes an id derived from the
key and the model's identity (the same bytes registered as two versions are two conversions),
which JetStream's duplicate window deduplicates.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from shared.contracts.conversion import Tolerance
from shared.contracts.identity import BASE_VARIANT, is_valid_variant

KEY_VERSION = 1


def conversion_key(
    *,
    source_sha256: str,
    profile: str,
    options: dict[str, Any],
    tolerance: Tolerance | None,
    output_tolerances: dict[str, Tolerance],
    dataset_uri: str | None,
    calibration_sha256: str | None,
    shapes: dict[str, list[int]],
    samples: int,
    seed: int,
) -> str:
    document = {
        "v": KEY_VERSION,
        "source": source_sha256,
        "profile": profile,
        "options": options,
        "tolerance": msgspec.to_builtins(tolerance) if tolerance else None,
        "output_tolerances": {k: msgspec.to_builtins(v) for k, v in sorted(output_tolerances.items())},
        "dataset": dataset_uri,
        "calibration": calibration_sha256,
        "shapes": {k: list(v) for k, v in sorted(shapes.items())},
        "samples": samples,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def variant_name(source_variant: str, profile: str) -> str:
    """``fp16`` for a base model; ``opset-18-fp16`` for the fp16 variant of an ``opset-18``."""
    return profile if source_variant == BASE_VARIANT else f"{source_variant}-{profile}"


def valid_variant(name: str) -> bool:
    return is_valid_variant(name)


def event_id(kind: str, *parts: str) -> str:
    """A deterministic event id: ``<kind>-<first 32 hex of sha256(parts)>``."""
    return f"{kind}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}"
