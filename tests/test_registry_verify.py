"""The registry's verification, called directly (no NATS): each bad artifact gets its reason."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from services.registry.errors import VerificationError
from services.registry.verify import check_external_paths, verify_model
from shared.contracts.registry import RejectionReason
from tests.support.models import digits_classifier, external_data_model, mlp


def test_skl2onnx_model_passes_with_metadata(tmp_path: Path) -> None:
    facts = verify_model(digits_classifier(tmp_path / "d.onnx"))
    assert facts.framework == "skl2onnx"
    assert facts.opset["ai.onnx.ml"] >= 1
    assert [(s.name, s.dtype, s.shape) for s in facts.inputs] == [("X", "float32", [None, 64])]
    assert {s.name for s in facts.outputs} == {"label", "probabilities"}
    assert facts.parameter_count >= 64 * 10  # coefficients live in ML-operator attributes


def test_onnx_helper_model_passes_with_dynamic_batch(tmp_path: Path) -> None:
    facts = verify_model(mlp(tmp_path / "m.onnx"))
    assert facts.inputs[0].shape == ["batch", 16]
    assert facts.outputs[0].shape == ["batch", 4]
    assert facts.parameter_count == 16 * 32 + 32 + 32 * 4 + 4


def test_truncated_bytes_are_not_onnx(tmp_path: Path) -> None:
    good = mlp(tmp_path / "m.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(VerificationError) as err:
        verify_model(bad)
    assert err.value.reason in (RejectionReason.NOT_ONNX, RejectionReason.INVALID_MODEL)


def test_non_onnx_bytes_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a README, not a model\n" * 20)
    with pytest.raises(VerificationError) as err:
        verify_model(bad)
    assert err.value.reason == RejectionReason.NOT_ONNX


def test_empty_file_is_not_onnx(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(VerificationError) as err:
        verify_model(empty)
    assert err.value.reason == RejectionReason.NOT_ONNX


def test_checker_failure_is_invalid_model(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad-op.onnx"
    onnx.save(model, str(path))
    with pytest.raises(VerificationError) as err:
        verify_model(path)
    assert err.value.reason == RejectionReason.INVALID_MODEL
    assert "NoSuchOp" in err.value.message


def test_shape_mismatch_fails_shape_inference(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.0] * 8)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "shapes.onnx"
    onnx.save(model, str(path))
    with pytest.raises(VerificationError) as err:
        verify_model(path)
    assert err.value.reason == RejectionReason.SHAPE_INFERENCE_FAILED


def test_external_data_inside_the_folder_is_inlined(tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "ext")
    facts = verify_model(path, external_data_dir=path.parent, workdir=tmp_path)
    assert facts.path != path
    reloaded = onnx.load(str(facts.path))
    assert not any(init.external_data for init in reloaded.graph.initializer)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin", "C:\\x.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = external_data_model(tmp_path / "ext", location=location)
    with pytest.raises(VerificationError) as err:
        verify_model(path, external_data_dir=path.parent, workdir=tmp_path)
    assert err.value.reason == RejectionReason.EXTERNAL_DATA_ESCAPE


def test_external_data_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 256)
    path = external_data_model(tmp_path / "ext", location="link.bin")
    (path.parent / "link.bin").symlink_to(outside)
    with pytest.raises(VerificationError) as err:
        verify_model(path, external_data_dir=path.parent, workdir=tmp_path)
    assert err.value.reason == RejectionReason.EXTERNAL_DATA_ESCAPE


def test_external_data_in_a_single_uploaded_blob_is_missing(tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "ext")
    with pytest.raises(VerificationError) as err:
        verify_model(path, external_data_dir=None)
    assert err.value.reason == RejectionReason.EXTERNAL_DATA_MISSING


def test_missing_external_file_is_reported(tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "ext")
    (path.parent / "weights.bin").unlink()
    with pytest.raises(VerificationError) as err:
        check_external_paths(["weights.bin"], path.parent)
    assert err.value.reason == RejectionReason.EXTERNAL_DATA_MISSING


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_onnx_bytes_are_rejected_precisely_or_accepted(tmp_path: Path, data: st.DataObject) -> None:
    """Fuzz: flipped, dropped and inserted bytes never crash or hang the verifier; each
    failure carries a known reason."""
    base = tmp_path / "base.onnx"
    if not base.exists():
        mlp(base)
    raw = bytearray(base.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "drop":
            del raw[i : i + data.draw(st.integers(1, 64))]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        if not raw:
            raw = bytearray(b"\0")
    mutated = tmp_path / "mutated.onnx"
    mutated.write_bytes(bytes(raw))
    try:
        verify_model(mutated)
    except VerificationError as exc:
        assert exc.reason in set(RejectionReason)
        assert exc.message


# --- verification by what runs ------------------------------------------------------------


def _ir3_initializer_not_an_input(path: Path) -> Path:
    """What onnxruntime's own sample mul_1.onnx is: IR 3, a weight that is not a graph input.
    onnx.checker refuses it (IR < 4 must list initializers as inputs); ONNX Runtime runs it."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1.0, 2, 3, 4, 5, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def _layernorm_under_opset_12(path: Path) -> Path:
    """What ONNX Runtime's optimiser saves for transformer-like graphs: LayerNormalization in
    the default domain under an opset that does not define it (ONNX Runtime has a kernel)."""
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1, epsilon=1e-5)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4),
            helper.make_tensor("bias", TensorProto.FLOAT, [4], [0.0] * 4),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("build", "finding"),
    [
        (_ir3_initializer_not_an_input, "in initializer but not in graph input"),
        (_layernorm_under_opset_12, "LayerNormalization"),
    ],
)
def test_a_model_onnx_runtime_loads_is_registered_with_the_checker_findings_as_warnings(
    tmp_path: Path, build, finding: str
) -> None:
    path = build(tmp_path / "m.onnx")
    facts = verify_model(path, strict=False)
    assert facts.warnings and finding in facts.warnings[0], facts.warnings
    assert facts.inputs and facts.outputs


@pytest.mark.parametrize("build", [_ir3_initializer_not_an_input, _layernorm_under_opset_12])
def test_strict_verification_keeps_the_checker_final(tmp_path: Path, build, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build(tmp_path / "m.onnx")
    with pytest.raises(VerificationError) as err:
        verify_model(path, strict=True)
    assert err.value.reason == RejectionReason.INVALID_MODEL
    monkeypatch.setenv("INFERLAB_VERIFY", "strict")
    with pytest.raises(VerificationError):
        verify_model(path)
    monkeypatch.setenv("INFERLAB_VERIFY", "runtime")
    assert verify_model(path).warnings


def test_a_model_neither_the_checker_nor_the_runtime_accepts_is_rejected_with_both_reasons(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "bad-op.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(VerificationError) as err:
        verify_model(path, strict=False)
    assert err.value.reason == RejectionReason.INVALID_MODEL
    assert "NoSuchOp" in err.value.message and "ONNX Runtime cannot load it either" in err.value.message
