"""Every CPU profile on real models made locally (scikit-learn via skl2onnx, a torch CNN,
onnx.helper graphs with dynamic dims), through the converter's pipeline: convert, run source
and variant with ONNX Runtime on identical inputs, check parity. TensorRT runs where a GPU
exists (``gpu`` marker)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from services.converter.errors import ConversionFailure, InvalidOptions, UnknownProfile
from services.converter.inputs import dataset_inputs, synthetic_inputs
from services.converter.pipeline import DataPlan, ProfileRun, References, run_profile
from services.converter.profiles import get_profile
from services.converter.profiles.base import normalize_opset_imports
from services.converter.profiles.tensorrt import TensorRTEngine, profile_shapes
from shared.contracts.conversion import Tolerance
from shared.datasets import load_dataset
from shared.gpu import gpu_available
from shared.onnxmeta import graph_inputs, graph_outputs
from tests.support import converter_models as cm
from tests.support.models import digits_classifier, digits_dataset, mlp

HAS_TORCH = importlib.util.find_spec("torch") is not None


@dataclass
class Model:
    path: Path
    dataset: Path | None = None
    task: str | None = None


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    d = tmp_path_factory.mktemp("converter-models")
    out = {
        "mlp": Model(mlp(d / "mlp.onnx")),
        "two_inputs": Model(cm.two_input_graph(d / "two.onnx")),
        "int_cast": Model(cm.int_cast_graph(d / "int_cast.onnx")),
        "skl_classifier": Model(
            cm.skl_mlp_classifier(d / "sklc.onnx"), digits_dataset(d / "digits.npz"), "classification"
        ),
        "skl_regressor": Model(
            cm.skl_mlp_regressor(d / "sklr.onnx"), cm.diabetes_dataset(d / "diabetes.npz"), "regression"
        ),
        "logreg": Model(digits_classifier(d / "logreg.onnx"), d / "digits.npz", "classification"),
        "logreg_zipmap": Model(digits_classifier(d / "zipmap.onnx", zipmap=True), d / "digits.npz", "classification"),
        "linreg": Model(cm.skl_linear_regressor(d / "linreg.onnx"), d / "diabetes.npz", "regression"),
    }
    if HAS_TORCH:
        out["torch_cnn"] = Model(cm.torch_cnn(d / "cnn.onnx"), cm.digits_images(d / "images.npz"), "classification")
    return out


def convert(
    model: Model,
    profile_id: str,
    workdir: Path,
    *,
    use_dataset: bool = True,
    calibration: Path | None = None,
    tolerance: Tolerance | None = None,
    options: dict | None = None,
    samples: int = 128,
):
    proto = onnx.load(str(model.path), load_external_data=False)
    inputs, outputs = graph_inputs(proto), graph_outputs(proto)
    dataset = None
    if use_dataset and model.dataset is not None:
        dataset = dataset_inputs(load_dataset(model.dataset, inputs), inputs, samples=samples)
    calib = None
    if calibration is not None:
        calib = dataset_inputs(load_dataset(calibration, inputs), inputs, samples=samples, source="calibration")
    profile = get_profile(profile_id)
    run = ProfileRun(
        profile=profile,
        options=profile.normalize_options(options or {}),
        source=model.path,
        source_ref="test@1.0.0",
        source_sha256="0" * 64,
        inputs=inputs,
        outputs=outputs,
        workdir=workdir / profile_id,
        data=DataPlan(dataset, calib, lambda: synthetic_inputs(inputs, samples=samples, seed=0)),
        references=References(model.path),
        task=model.task,
        tolerance=tolerance,
    )
    return run_profile(run)


CPU_PROFILES = ["ort-opt", "fp16", "int8-dynamic", "int8-static", "opset-19"]
WITH_DATA = ["skl_classifier", "skl_regressor", "torch_cnn"]


@pytest.mark.parametrize("profile_id", CPU_PROFILES)
@pytest.mark.parametrize("name", WITH_DATA)
def test_profile_converts_and_passes_parity(models, tmp_path: Path, name: str, profile_id: str) -> None:
    if name not in models:
        pytest.skip("torch is not installed")
    model = models[name]
    outcome = run_ok = convert(model, profile_id, tmp_path)
    report = outcome.report
    assert outcome.path.is_file() and report.parity is not None and report.parity.passed
    assert report.parity.input_source == "dataset"
    assert report.size_after_bytes == outcome.path.stat().st_size and report.variant_sha256
    assert report.conversion_s > 0 and report.duration_s >= report.conversion_s
    assert all(o.compared for o in report.parity.outputs)
    metrics = [o for o in report.parity.outputs if o.metric]
    assert metrics, "labelled data gives the task metric"
    expected_metric = "rmse" if model.task == "regression" else "accuracy"
    assert {o.metric for o in metrics} == {expected_metric}
    if profile_id == "int8-static":
        assert report.parity.calibration_source == "dataset" and report.parity.calibration_samples > 0
        assert "split" in report.parity.note
    if profile_id in ("fp16", "int8-dynamic", "int8-static"):
        assert report.size_after_bytes < report.size_before_bytes or name == "skl_regressor"
    onnx.checker.check_model(onnx.load(str(run_ok.path)), full_check=True)


@pytest.mark.parametrize("profile_id", ["ort-opt", "fp16", "int8-dynamic", "opset-19"])
@pytest.mark.parametrize("name", ["mlp", "two_inputs", "int_cast"])
def test_helper_graphs_with_dynamic_dims_on_synthetic_inputs(
    models, tmp_path: Path, name: str, profile_id: str
) -> None:
    outcome = convert(models[name], profile_id, tmp_path)
    parity = outcome.report.parity
    assert parity.passed and parity.input_source == "synthetic" and parity.samples == 128
    assert parity.note.startswith("seeded synthetic inputs")
    if name == "int_cast" and profile_id == "fp16":
        assert outcome.report.details["casts_retargeted"] == 1


def test_fp16_closes_skl2onnx_cast_gap(models, tmp_path: Path) -> None:
    report = convert(models["skl_classifier"], "fp16", tmp_path).report
    assert report.details["noop_casts_removed"] == 1
    probs = next(o for o in report.parity.outputs if o.name == "probabilities")
    assert probs.max_abs_error < 1e-2 and probs.top1_agreement == 1.0


def test_int8_static_with_request_calibration_checks_on_dataset(models, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    digits_dataset(calib, start=0)
    report = convert(models["skl_classifier"], "int8-static", tmp_path, calibration=calib).report
    assert report.parity.input_source == "dataset" and report.parity.calibration_source == "calibration"
    assert report.details["calibration_samples"] == 128


def test_int8_static_without_calibration_data_needs_it(models, tmp_path: Path) -> None:
    with pytest.raises(ConversionFailure) as err:
        convert(models["mlp"], "int8-static", tmp_path)
    assert err.value.code == "needs_calibration_data"
    assert "calibration" in err.value.message


def test_impossible_tolerance_fails_parity_with_report(models, tmp_path: Path) -> None:
    with pytest.raises(ConversionFailure) as err:
        convert(models["skl_classifier"], "fp16", tmp_path, tolerance=Tolerance(atol=0.0, rtol=0.0))
    failure = err.value
    assert failure.code == "parity_failed"
    assert failure.report is not None and failure.report.parity is not None and not failure.report.parity.passed
    probs = next(o for o in failure.report.parity.outputs if o.name == "probabilities")
    assert "atol/rtol" in probs.failed and probs.tolerance.atol == 0.0
    assert "probabilities: failed atol/rtol" in failure.message


@pytest.mark.parametrize("profile_id", ["fp16", "int8-dynamic", "int8-static"])
@pytest.mark.parametrize("name", ["logreg", "logreg_zipmap", "linreg"])
def test_single_ml_operator_models_are_not_applicable(models, tmp_path: Path, name: str, profile_id: str) -> None:
    with pytest.raises(ConversionFailure) as err:
        convert(models[name], profile_id, tmp_path)
    assert err.value.code == "not_applicable" and err.value.skipped
    assert "ai.onnx.ml" in err.value.message or "float32" in err.value.message


@pytest.mark.parametrize("profile_id", ["ort-opt", "opset-19"])
@pytest.mark.parametrize("name", ["logreg", "logreg_zipmap", "linreg"])
def test_ml_operator_models_optimise_and_compare(models, tmp_path: Path, name: str, profile_id: str) -> None:
    report = convert(models[name], profile_id, tmp_path).report
    assert report.parity.passed
    if name == "logreg_zipmap":
        zipmap = next(o for o in report.parity.outputs if o.name == "output_probability")
        assert zipmap.compared and zipmap.max_abs_error == 0.0 and zipmap.metric == "accuracy"
        assert "sequence of maps compared as an [N, 10] matrix" in zipmap.note


def test_duplicate_opset_imports_are_normalised(models) -> None:
    proto = onnx.load(str(models["logreg"].path))
    assert [o.domain for o in proto.opset_import].count("") == 2  # what skl2onnx writes
    changes = normalize_opset_imports(proto)
    assert changes == ["removed duplicate opset import ai.onnx 17"]
    assert [o.domain for o in proto.opset_import].count("") == 1
    onnx.checker.check_model(proto, full_check=True)


def test_int8_dynamic_on_skl2onnx_duplicate_opset_model(models, tmp_path: Path) -> None:
    # The skl2onnx MLP carries the duplicate too; quantize_dynamic would raise "Failed to find
    # proper ai.onnx domain" without the normalisation.
    proto = onnx.load(str(models["skl_classifier"].path))
    duplicates = [o.domain for o in proto.opset_import].count("") > 1
    report = convert(models["skl_classifier"], "int8-dynamic", tmp_path).report
    assert report.details["quantized_nodes"] > 0
    if duplicates:
        assert report.details["fixes"]


def test_options_and_profile_ids_are_validated() -> None:
    with pytest.raises(UnknownProfile, match="unknown profile 'int4'"):
        get_profile("int4")
    with pytest.raises(InvalidOptions, match="outside what onnx"):
        get_profile("opset-999")
    with pytest.raises(InvalidOptions, match="unknown option"):
        get_profile("int8-dynamic").normalize_options({"bits": 4})
    with pytest.raises(InvalidOptions, match="must be one of"):
        get_profile("ort-opt").normalize_options({"level": "ludicrous"})
    assert get_profile("ort-opt").normalize_options({}) == {"level": "extended"}


def test_ort_opt_level_is_recorded(models, tmp_path: Path) -> None:
    report = convert(models["mlp"], "ort-opt", tmp_path, options={"level": "basic"}).report
    assert report.details["level"] == "basic" and report.options == {"level": "basic"}


def test_opset_already_current_is_not_applicable(models, tmp_path: Path) -> None:
    with pytest.raises(ConversionFailure) as err:
        convert(models["mlp"], "opset-17", tmp_path)
    assert err.value.code == "not_applicable" and "already uses ai.onnx opset 17" in err.value.message


def test_tensorrt_profile_shapes() -> None:
    low, opt, high = profile_shapes("image", (-1, 3, -1, -1), batch=32, shapes={"image": [8, 3, 64, 64]}, options={})
    assert (low, opt, high) == ([1, 3, 1, 1], [8, 3, 64, 64], [8, 3, 64, 64])
    low, opt, high = profile_shapes("x", (-1, 16), batch=32, shapes={}, options={})
    assert (low, opt, high) == ([1, 16], [32, 16], [32, 16])
    explicit = {"min_shapes": {"x": [1, 16]}, "opt_shapes": {"x": [4, 16]}, "max_shapes": {"x": [64, 16]}}
    assert profile_shapes("x", (-1, 16), batch=32, shapes={}, options=explicit) == ([1, 16], [4, 16], [64, 16])


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
def test_tensorrt_unavailable_without_gpu(models, tmp_path: Path) -> None:
    for precision in ("fp16", "int8"):
        assert TensorRTEngine(precision).availability()
    with pytest.raises(ConversionFailure) as err:
        convert(models["mlp"], "trt-fp16", tmp_path)
    assert err.value.code == "unavailable_on_host" and err.value.skipped


@pytest.mark.gpu
@pytest.mark.parametrize("profile_id", ["trt-fp16", "trt-int8"])
def test_tensorrt_engine_builds_and_passes_parity(models, tmp_path: Path, profile_id: str) -> None:
    reason = get_profile(profile_id).availability()
    if reason:
        pytest.skip(reason)
    name = "torch_cnn" if "torch_cnn" in models else "skl_classifier"
    outcome = convert(models[name], profile_id, tmp_path)
    assert outcome.format == "tensorrt-engine" and outcome.report.parity.passed
    assert outcome.report.details["tensorrt_version"]
    assert np.isfinite(outcome.report.size_after_bytes)


# --- graphs as third-party exporters write them (see docs/corpus.md) ------------------------


def _conv_net(path: Path, *, ir3_weights_as_inputs: bool = False, bn_variance: float = 1.0) -> Path:
    """Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> Flatten -> Gemm, seeded."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, 8).astype(np.float32),
        "bn_scale": np.ones(8, np.float32),
        "bn_bias": np.zeros(8, np.float32),
        "bn_mean": np.zeros(8, np.float32),
        # a large running variance, as Paddle's OCR detector carries: float16 clamps it
        "bn_var": np.full(8, bn_variance, np.float32),
        "fc_w": rng.normal(0, 0.3, (8, 5)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])]
    if ir3_weights_as_inputs:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in weights.items()]
    graph = helper.make_graph(
        nodes,
        "net",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3 if ir3_weights_as_inputs else 7
    onnx.save(model, str(path))
    return path


def test_ir3_weights_listed_as_inputs_are_constants_before_any_profile(tmp_path: Path) -> None:
    import onnxruntime as ort

    source = _conv_net(tmp_path / "ir3.onnx", ir3_weights_as_inputs=True)
    outcome = convert(Model(source), "ort-opt", tmp_path)
    assert outcome.report.parity is not None and outcome.report.parity.passed
    assert any("IR version 3" in c for c in outcome.report.details["normalized_source"])
    session = ort.InferenceSession(str(outcome.path), providers=["CPUExecutionProvider"])
    # the optimiser folded the weights: the variant asks for the image only (no ..._SHAPE inputs)
    assert [i.name for i in session.get_inputs()] == ["x"]


def test_int8_quantises_weights_that_come_out_of_constant_nodes(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (32, 16)).astype(np.float32), "w_value")
    graph = helper.make_graph(
        [
            # the weight is a Constant node's output, not an initializer (as Paddle and old
            # exporters write it): quantize_dynamic alone fails "Expected ... to be an initializer"
            helper.make_node("Constant", [], ["w"], value=w),
            helper.make_node(
                "ConstantOfShape", ["shape"], ["b"], value=numpy_helper.from_array(np.array([0.1], np.float32))
            ),
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(np.array([16], np.int64), "shape")],
    )
    path = tmp_path / "constants.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    outcome = convert(Model(path), "int8-dynamic", tmp_path)
    assert outcome.report.details["quantized_nodes"] > 0
    assert any(f.startswith("quant_pre_process") for f in outcome.report.details["fixes"])


@pytest.mark.parametrize("profile_id", ["fp16", "int8-dynamic"])
def test_an_already_quantised_graph_is_not_applicable(tmp_path: Path, profile_id: str) -> None:
    source = _conv_net(tmp_path / "net.onnx")
    first = convert(Model(source), "int8-dynamic", tmp_path / "first")
    with pytest.raises(ConversionFailure) as err:
        convert(Model(first.path), profile_id, tmp_path / "second")
    assert err.value.code == "not_applicable" and err.value.skipped
    assert "already quantised" in err.value.message


def test_fp16_keeps_nodes_beyond_float16_range_in_float32_when_plain_fp16_breaks_parity(tmp_path: Path) -> None:
    source = _conv_net(tmp_path / "net.onnx", bn_variance=1e8)
    outcome = convert(Model(source), "fp16", tmp_path)
    details = outcome.report.details
    assert outcome.report.parity is not None and outcome.report.parity.passed
    assert details["mixed_precision"].startswith("range")
    assert "bn" in details["float32_beyond_fp16_range"]
    assert details["float16_nodes"] > 0


def test_every_fp16_variant_loads_in_onnx_runtime(models, tmp_path: Path) -> None:
    """The load check is part of the profile: what leaves it runs."""
    import onnxruntime as ort

    for name in ("mlp", "two_inputs", "int_cast", "skl_classifier"):
        outcome = convert(models[name], "fp16", tmp_path / name)
        ort.InferenceSession(str(outcome.path), providers=["CPUExecutionProvider"])


def _generated_weights(path: Path, shape: tuple[int, int] = (2304, 1024)) -> Path:
    """A MatMul whose weight (9 MB by default) a ConstantOfShape generates at load time (the
    IR-3 model zoo's light models are built so): a few hundred bytes on disk."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape", ["shape"], ["w"], value=numpy_helper.from_array(np.array([0.01], np.float32))
            ),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", shape[1]])],
        [numpy_helper.from_array(np.array(shape, np.int64), "shape")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_weights_generated_at_load_time_are_not_stored_by_any_profile(tmp_path: Path) -> None:
    source = _generated_weights(tmp_path / "gen.onnx")
    outcome = convert(Model(source), "ort-opt", tmp_path, samples=8)
    assert outcome.report.size_after_bytes < 64 * 1024, outcome.report.size_after_bytes
    assert "constant folding disabled" in outcome.report.details["notes"][0]
    with pytest.raises(ConversionFailure) as err:
        convert(Model(source), "int8-dynamic", tmp_path / "int8", samples=8)
    assert err.value.code == "not_applicable" and "generates its weights at load time" in err.value.message


@pytest.mark.parametrize("profile_id", ["int8-dynamic", "int8-static"])
def test_int8_weights_are_7_bit_by_default(models, tmp_path: Path, profile_id: str) -> None:
    # Both profiles run ONNX Runtime's u8 x s8 kernels, whose int16 pair sums saturate on CPUs
    # without VNNI unless weights stay within 7 bits (reduce_range); 8 bits on request.
    assert get_profile(profile_id).normalize_options({})["reduce_range"] is True
    outcome = convert(models["skl_classifier"], profile_id, tmp_path, samples=32)
    proto = onnx.load(str(outcome.path))
    weights = [
        onnx.numpy_helper.to_array(init) for init in proto.graph.initializer if init.data_type == onnx.TensorProto.INT8
    ]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights if w.size) <= 64


def test_weights_generated_at_load_time_past_a_megabyte_are_not_stored(tmp_path: Path) -> None:
    # squeezenet's shape (IR-3 zoo): 15 KB on disk, 3.7 MB once folded, under the old 8 MB floor
    source = _generated_weights(tmp_path / "gen.onnx", shape=(512, 1024))
    outcome = convert(Model(source), "ort-opt", tmp_path, samples=4)
    assert outcome.report.size_after_bytes < 64 * 1024, outcome.report.size_after_bytes
    with pytest.raises(ConversionFailure) as err:
        convert(Model(source), "int8-dynamic", tmp_path / "int8", samples=4)
    assert err.value.code == "not_applicable" and "generates its weights at load time" in err.value.message


def _branches_read_the_input(path: Path) -> Path:
    """Silero VAD's shape: an If on the sample rate whose branches alone read the float graph
    input (from the outer scope) and hold their own weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)

    def branch(name: str) -> onnx.GraphProto:
        w = numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), f"{name}_w")
        return helper.make_graph(
            [
                helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_m"]),
                helper.make_node("Relu", [f"{name}_m"], [f"{name}_y"]),
            ],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["n", 64])],
            [w],
        )

    graph = helper.make_graph(
        [
            helper.make_node("Equal", ["sr", "rate"], ["is_16k"]),
            helper.make_node("If", ["is_16k"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(np.array(16000, np.int64), "rate")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_converts_branches_that_read_a_graph_input(tmp_path: Path) -> None:
    outcome = convert(Model(_branches_read_the_input(tmp_path / "if.onnx")), "fp16", tmp_path, samples=8)
    details = outcome.report.details
    assert outcome.report.parity is not None and outcome.report.parity.passed
    assert details["inputs_routed_to_subgraphs"] == ["x"]
    # nothing had to stay float32 for the variant to load, and the branches' weights halved
    assert details["kept_float32_to_load"] == [] and "mixed_precision" not in details
    assert outcome.report.size_after_bytes < 0.7 * outcome.report.size_before_bytes
