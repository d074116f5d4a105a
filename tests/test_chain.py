"""Following a version to its verdict: the pure tracker fed the events the services publish,
in the orders they can arrive (the end-to-end wait is in tests/test_cli.py)."""

from __future__ import annotations

from shared.chain import Chain
from shared.contracts.conversion import ConversionFailed, ConversionReport, ModelConverted
from shared.contracts.validation import CriterionResult, ModelValidated, ValidationErrored, ValidationReport


def _validated(ref: str, variant: str, verdict: str) -> ModelValidated:
    failed = (
        []
        if verdict != "not_ready"
        else [CriterionResult(metric="p99_ms", op="<=", limit=1, measured=2.0, passed=False, message="p99 too slow")]
    )
    return ModelValidated(
        name="m",
        version=ref.split("@")[1].split("+")[0],
        variant=variant,
        ref=ref,
        ready=verdict == "ready",
        verdict=verdict,
        accuracy=0.9,
        report=ValidationReport(criteria=failed),
    )


def _converted(profile: str) -> ModelConverted:
    report = ConversionReport(
        profile=profile, source_ref="m@1.0.0", source_sha256="ab", size_before_bytes=1, duration_s=1.0
    )
    return ModelConverted(
        name="m", version="1.0.0", variant=profile, ref=f"m@1.0.0+{profile}", report=report, profile=profile
    )


def test_the_chain_settles_when_every_profile_and_variant_has_ended() -> None:
    chain = Chain("m", "1.0.0", ["fp16", "int8-dynamic"])
    chain.feed(_validated("m@1.0.0", "base", "ready"))
    assert not chain.settled  # the profiles have not answered
    chain.feed(_converted("fp16"))
    chain.feed(ConversionFailed(name="m", version="1.0.0", profile="int8-dynamic", reason="parity_failed", message="x"))
    assert not chain.settled  # fp16 is converted, not validated
    chain.feed(_validated("m@2.0.0", "base", "not_ready"))  # another version: ignored
    chain.feed(_validated("m@1.0.0+fp16", "fp16", "not_ready"))
    assert chain.settled
    result = chain.result()
    assert result.ready and result.complete and result.verdict == "ready"
    assert [(r.ref, r.verdict) for r in result.rows] == [
        ("m@1.0.0", "ready"),
        ("m@1.0.0 (int8-dynamic)", "conversion_failed"),
        ("m@1.0.0+fp16", "not_ready"),
    ]


def test_a_base_without_accuracy_evidence_or_that_failed_is_not_ready() -> None:
    chain = Chain("m", "1.0.0", [])
    chain.feed(_validated("m@1.0.0", "base", "not_validated_for_accuracy"))
    assert chain.settled and not chain.result().ready
    chain = Chain("m", "1.0.0", [])
    chain.feed(
        ValidationErrored(name="m", version="1.0.0", ref="m@1.0.0", reason="unknown_dataset", message="no dataset")
    )
    result = chain.result()
    assert result.complete and not result.ready and result.verdict == "validation_failed"


def test_waiting_for_one_variant_ignores_the_others() -> None:
    chain = Chain("m", "1.0.0", [], target="m@1.0.0+fp16")
    chain.feed(_validated("m@1.0.0", "base", "ready"))
    assert not chain.settled
    chain.feed(_validated("m@1.0.0+fp16", "fp16", "ready"))
    assert chain.settled and chain.result().ready and len(chain.result().rows) == 1
