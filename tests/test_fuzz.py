"""Fuzzing with hypothesis: every contract decoder with structured inputs (valid messages of
every catalogued type, and the same messages with a field of the wrong type), and the
registry's verification with structurally mutated ONNX models (graph, nodes, tensors, opsets,
external-data references). Nothing may crash, hang or fail imprecisely: a decoder either
decodes or raises msgspec's ValidationError/DecodeError naming the field; the verifier either
accepts the model or rejects it with a known reason and a message.

Byte-level fuzzing is in tests/test_contracts.py (arbitrary bytes and JSON objects) and
tests/test_registry_verify.py (flipped, dropped and inserted bytes)."""

from __future__ import annotations

import datetime as dt
import enum
import threading
from pathlib import Path
from typing import Any

import msgspec
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from services.benchmarker.service import AlertRow
from services.registry.errors import VerificationError
from services.registry.verify import verify_model, verify_untrusted
from shared.contracts.base import decode, encode
from shared.contracts.catalogue import CATALOGUE
from shared.contracts.registry import RejectionReason
from tests.support.models import mlp

# Every type a service decodes from a stream: the catalogue, plus the benchmarker's lenient
# reading of any alert.
DECODED = {spec.message for spec in CATALOGUE} | {AlertRow}

# --- strategies from the contracts ------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False), _text)
_json = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=6
)


def strategy(t: msgspec.inspect.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """JSON values that decode as ``t`` (msgspec's type description)."""
    i = msgspec.inspect
    if isinstance(t, i.StructType):
        required = {f.encode_name: strategy(f.type, depth + 1) for f in t.fields if f.required}
        optional = {f.encode_name: strategy(f.type, depth + 1) for f in t.fields if not f.required and depth < 3}
        fixed = {t.tag_field: st.just(t.tag)} if t.tag_field is not None else {}
        return st.fixed_dictionaries({**fixed, **required}, optional=optional)
    if isinstance(t, i.UnionType):
        return st.one_of([strategy(option, depth) for option in t.types])
    if isinstance(t, i.NoneType):
        return st.none()
    if isinstance(t, i.StrType):
        return _text
    if isinstance(t, i.BoolType):
        return st.booleans()
    if isinstance(t, i.IntType):
        return st.integers(-(2**53), 2**53)
    if isinstance(t, i.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000)
    if isinstance(t, i.DateTimeType):
        return st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat())
    if isinstance(t, i.EnumType):
        return st.sampled_from([m.value if isinstance(m, enum.Enum) else m for m in t.cls])
    if isinstance(t, i.LiteralType):
        return st.sampled_from(list(t.values))
    if isinstance(t, i.ListType):
        return st.lists(strategy(t.item_type, depth + 1), max_size=0 if depth >= 3 else 2)
    if isinstance(t, i.TupleType):
        return st.tuples(*(strategy(x, depth + 1) for x in t.item_types)).map(list)
    if isinstance(t, i.DictType):
        return st.dictionaries(_text, strategy(t.value_type, depth + 1), max_size=0 if depth >= 3 else 2)
    if isinstance(t, i.AnyType):
        return _json
    raise TypeError(f"no strategy for {t!r}")


def _info(kind: type) -> msgspec.inspect.StructType:
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    return info


_WRONG = {
    "str": st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({})),
    "number": st.one_of(_text.filter(bool), st.just([]), st.just({"x": 1})),
    "other": st.one_of(st.integers(), _text, st.just([1, "x"])),
}


@pytest.mark.parametrize("kind", sorted(DECODED, key=lambda k: k.__name__), ids=lambda k: k.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_decoder_reads_valid_messages_and_refuses_wrong_types_by_field(kind: type, data: st.DataObject) -> None:
    info = _info(kind)
    obj = data.draw(strategy(info), label="valid message")
    message = decode(msgspec.json.encode(obj), kind)  # valid by construction: must decode
    assert decode(encode(message), kind) == message  # and survive a round trip unchanged

    mutable = [f for f in info.fields if f.encode_name != info.tag_field]
    field = data.draw(st.sampled_from(mutable), label="field")
    kind_name = type(field.type).__name__
    wrong = data.draw(
        _WRONG["str" if kind_name == "StrType" else "number" if kind_name in ("IntType", "FloatType") else "other"],
        label="wrong value",
    )
    try:
        decode(msgspec.json.encode({**obj, field.encode_name: wrong}), kind)
    except msgspec.ValidationError as exc:
        assert f"$.{field.encode_name}" in str(exc), str(exc)  # the error names the field


# --- the registry's verification, fed structurally mutated models --------------------------------------


def _mutations(model: onnx.ModelProto, data: st.DataObject) -> onnx.ModelProto:
    """Apply one to three structural mutations, each a plausible way a model file is wrong."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(
            st.sampled_from(
                [
                    "op_type",
                    "drop_node",
                    "rename_input",
                    "dims",
                    "elem_type",
                    "opset",
                    "ir_version",
                    "external",
                    "duplicate_output",
                    "io_shape",
                    "attribute",
                    "domain",
                ]
            ),
            label="mutation",
        )
        node = g.node[data.draw(st.integers(0, len(g.node) - 1))] if len(g.node) else None
        if kind == "op_type" and node is not None:
            node.op_type = data.draw(st.sampled_from(["Conv", "NoSuchOp", "", "Loop", "If", "Softmax", "Reshape"]))
        elif kind == "drop_node" and len(g.node) > 1:
            del g.node[data.draw(st.integers(0, len(g.node) - 1))]
        elif kind == "rename_input" and node is not None and node.input:
            node.input[0] = data.draw(st.sampled_from(["", "missing", node.output[0] if node.output else "x"]))
        elif kind == "dims" and g.initializer:
            init = g.initializer[data.draw(st.integers(0, len(g.initializer) - 1))]
            init.dims[:] = data.draw(st.lists(st.integers(-2, 1 << 40), max_size=4))
        elif kind == "elem_type" and g.initializer:
            g.initializer[0].data_type = data.draw(st.integers(-1, 40))
        elif kind == "opset":
            m.opset_import[0].version = data.draw(st.integers(-1, 1000))
        elif kind == "ir_version":
            m.ir_version = data.draw(st.integers(1, 100))
        elif kind == "external" and g.initializer:
            init = g.initializer[0]
            init.data_location = TensorProto.EXTERNAL
            del init.external_data[:]
            for key, value in data.draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["location", "offset", "length", "checksum", "bogus"]),
                        st.sampled_from(["w.bin", "../../etc/passwd", "/abs", "", "abc", "-5", "12", "C:\\x"]),
                    ),
                    max_size=3,
                ),
                label="external_data",
            ):
                init.external_data.add(key=key, value=value)
        elif kind == "duplicate_output" and g.output:
            g.output.add().CopyFrom(g.output[0])
        elif kind == "io_shape" and g.input:
            dim = g.input[0].type.tensor_type.shape.dim
            if dim:
                d = dim[data.draw(st.integers(0, len(dim) - 1))]
                choice = data.draw(st.sampled_from(["neg", "huge", "param", "clear"]))
                if choice == "neg":
                    d.dim_value = -3
                elif choice == "huge":
                    d.dim_value = 1 << 62
                elif choice == "param":
                    d.dim_param = data.draw(_text)
                else:
                    d.Clear()
        elif kind == "attribute" and node is not None:
            node.attribute.append(helper.make_attribute(data.draw(st.sampled_from(["axis", "perm", "x"])), 7))
        elif kind == "domain" and node is not None:
            node.domain = data.draw(st.sampled_from(["ai.onnx.ml", "com.example", "com.microsoft"]))
    return m


_BASE: dict[str, bytes] = {}


def _base_model(tmp_path: Path) -> onnx.ModelProto:
    if "mlp" not in _BASE:
        _BASE["mlp"] = mlp(tmp_path / "base.onnx").read_bytes()
    return onnx.load_from_string(_BASE["mlp"])


def _verify_within(path: Path, seconds: float) -> tuple[Any, BaseException | None]:
    """verify_model on a thread, so that a hang fails the test instead of blocking it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["facts"] = verify_untrusted(path, external_data_dir=path.parent, workdir=path.parent)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"verification of {path} hung for {seconds}s"
    return outcome.get("facts"), outcome.get("error")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_structurally_mutated_models_are_accepted_or_rejected_precisely(tmp_path: Path, data: st.DataObject) -> None:
    mutated = _mutations(_base_model(tmp_path), data)
    path = tmp_path / "mutated.onnx"
    path.write_bytes(mutated.SerializeToString())
    facts, error = _verify_within(path, 30.0)
    if error is not None:
        assert isinstance(error, VerificationError), f"{type(error).__name__}: {error}"
        assert error.reason in set(RejectionReason) and error.message
    else:
        assert facts.inputs and facts.outputs


# --- what the fuzzer found --------------------------------------------------------------------------


def _external_offset_model(folder: Path, offset: str) -> Path:
    """A model whose weight is external with an ``offset`` that is not a number."""
    model = onnx.load_from_string(mlp(folder / "plain.onnx").read_bytes())
    init = model.graph.initializer[0]
    (folder / "w.bin").write_bytes(init.raw_data or b"\0" * 64)
    init.ClearField("raw_data")
    del init.float_data[:]
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value="w.bin")
    init.external_data.add(key="offset", value=offset)
    path = folder / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return path


async def test_a_malformed_external_data_reference_is_rejected_at_once_not_retried(
    settings: Any, client: Any, imports: Path
) -> None:
    """Found by the fuzzer: onnx raises a bare ValueError for an external-data offset that is
    not a number; the registry used to retry the command until it was dead-lettered, leaving
    its sender without an answer. Now it is an immediate, precise rejection."""
    from services.registry.service import RegistryService
    from shared.errors import Rejected
    from tests.support.services import running

    path = _external_offset_model(imports, "abc")
    async with running(settings, RegistryService) as registry:
        with pytest.raises(Rejected) as rejected:
            await client.register(f"file://{path}", name="offset", version="1.0.0", timeout=30)
        assert rejected.value.code == "invalid_model" and "offset" not in rejected.value.code
        assert "int()" in rejected.value.message or "offset" in rejected.value.message
        assert all(w.dead_lettered == 0 and w.failed == 0 for w in registry.workers)


def test_verify_model_itself_rejects_a_malformed_external_data_offset(tmp_path: Path) -> None:
    path = _external_offset_model(tmp_path, "-5")
    with pytest.raises(VerificationError):
        verify_model(path, external_data_dir=tmp_path, workdir=tmp_path)
