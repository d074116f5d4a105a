"""Contracts: round-trips, forward compatibility, hand-written commands, schema export."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts import subjects
from shared.contracts.base import Command, decode, encode, with_envelope
from shared.contracts.catalogue import CATALOGUE, all_schemas, message_type_for
from shared.contracts.identity import ModelRef, format_ref, is_valid_version, version_key
from shared.contracts.registry import ModelRecord, ModelRegistered, RegisterModel, TensorSpec
from shared.errors import InvalidReference


def test_hand_written_register_command_decodes() -> None:
    raw = b'{"name": "resnet50", "version": "1.2.0", "artifact_uri": "file:///models/r.onnx"}'
    cmd = decode(raw, RegisterModel)
    assert (cmd.name, cmd.version, cmd.variant) == ("resnet50", "1.2.0", "base")
    assert cmd.event_id == ""  # filled by the bus from the stream position
    filled = with_envelope(cmd, event_id="models-42")
    assert filled.event_id == filled.correlation_id == "models-42"


def test_unknown_fields_are_ignored() -> None:
    raw = json.dumps(
        {"name": "m", "version": "1.0.0", "artifact_uri": "nats-obj://a/b", "added_in_v2": {"x": 1}}
    ).encode()
    assert decode(raw, RegisterModel).name == "m"


def test_wrong_types_fail_with_the_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.version"):
        decode(b'{"name": "m", "version": 1, "artifact_uri": "x"}', RegisterModel)


def test_wrong_type_tag_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="type"):
        decode(b'{"type": "model.convert", "name": "m", "version": "1.0.0", "artifact_uri": "x"}', RegisterModel)


def test_event_round_trip_keeps_every_field() -> None:
    record = ModelRecord(
        name="m",
        version="1.0.0",
        ref="m@1.0.0",
        sha256="0" * 64,
        size_bytes=10,
        artifact_uri="nats-obj://artifacts/sha256/x",
        source_uri="file:///x",
        inputs=[TensorSpec(name="x", dtype="float32", shape=["batch", 3, None])],
        metadata={"nested": {"a": [1, 2.5, "s"]}},
    )
    event = ModelRegistered(event_id="e1", name="m", version="1.0.0", sha256="0" * 64, record=record)
    again = decode(encode(event), ModelRegistered)
    assert again == event
    assert json.loads(encode(event))["type"] == "model.registered"


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.subject)
def test_every_catalogued_message_has_a_schema(spec) -> None:
    schema = all_schemas()[spec.subject]
    root = schema["$defs"][spec.message.__name__]
    assert root["type"] == "object"
    if issubclass(spec.message, Command):
        assert "type" not in root.get("required", [])  # hand-written commands may omit it


def test_subject_lookup_finds_the_message_type() -> None:
    assert message_type_for("model.registered.resnet50") is ModelRegistered
    assert message_type_for("model.register") is RegisterModel
    assert message_type_for("model.nothing.x") is None


def test_facts_end_with_the_name_token_and_invalid_names_are_contained() -> None:
    assert subjects.registered("resnet50") == "model.registered.resnet50"
    assert subjects.rejected("Bad Name.>") == "model.rejected._"
    assert subjects.alert("performance", "regression", "m") == "alerts.performance.regression.m"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resnet50", ModelRef("resnet50")),
        ("resnet50@1.2.0", ModelRef("resnet50", version="1.2.0")),
        ("resnet50@1.2.0+fp16", ModelRef("resnet50", version="1.2.0", variant="fp16")),
        ("resnet50@production", ModelRef("resnet50", alias="production")),
        ("resnet50@champion+int8-dynamic", ModelRef("resnet50", alias="champion", variant="int8-dynamic")),
        ("m@1.0.0-rc.1", ModelRef("m", version="1.0.0-rc.1")),
    ],
)
def test_reference_parsing(text: str, expected: ModelRef) -> None:
    ref = ModelRef.parse(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", "UPPER@1.0.0", "m@1.0", "m@1.0.0+", "m@@1", "m@1.0.0+fp16+x", "../etc@1.0.0"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        ModelRef.parse(text)


def test_semver_precedence() -> None:
    versions = ["1.0.0", "1.0.0-rc.1", "1.0.0-alpha", "0.9.9", "1.10.0", "1.2.0"]
    assert sorted(versions, key=version_key) == ["0.9.9", "1.0.0-alpha", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0"]
    assert not is_valid_version("1.0.0+build")  # '+' introduces the variant
    assert format_ref("m", "1.0.0", "fp16") == "m@1.0.0+fp16"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoding_arbitrary_bytes_never_crashes(data: bytes) -> None:
    for spec in CATALOGUE:
        try:
            decode(data, spec.message)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "version", "artifact_uri", "variant", "tags", "metadata", "sha256", "extra"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        ),
    )
)
def test_decoding_arbitrary_json_objects_never_crashes(obj: dict) -> None:
    try:
        decode(json.dumps(obj).encode(), RegisterModel)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
