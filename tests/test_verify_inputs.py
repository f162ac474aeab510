from __future__ import annotations

import numpy as np
import pytest

from hub.declarations import Tolerance
from hub.errors import UsageError
from hub.inputs import load_samples, merge_specs, parse_input_flag, random_samples
from hub.states import TensorSpec
from hub.verify import compare


def test_identical_outputs_are_perfect():
    fidelity = compare([[np.array([[1.0, 3.0, 2.0]])]], [[np.array([[1.0, 3.0, 2.0]])]])
    assert fidelity.max_abs == 0 and fidelity.cosine == pytest.approx(1.0)
    assert fidelity.top1_agreement == 1.0 and fidelity.top5_containment == 1.0


def test_disagreeing_classes_and_drift_are_measured():
    reference = [[np.array([[5.0, 0.0, 0.0]])], [np.array([[0.0, 5.0, 0.0]])]]
    candidate = [[np.array([[5.0, 0.0, 0.0]])], [np.array([[0.0, 0.0, 5.0]])]]
    fidelity = compare(reference, candidate)
    assert fidelity.top1_agreement == 0.5
    assert fidelity.confident_top1_agreement == 0.5 and fidelity.confident_samples == 2
    assert fidelity.max_abs == 5.0
    assert fidelity.cosine == pytest.approx(0.5)
    assert fidelity.violations(Tolerance(min_cosine=0.9, min_top1=0.9)) == [
        "cosine 0.50000 < 0.9", "top-1 agreement 0.500 < 0.9"]


def test_nan_and_infinities_must_sit_where_the_source_has_them():
    source = np.array([[4.0, np.nan, -np.inf, 1.0]])
    same = compare([[source]], [[source.copy()]])
    assert same.cosine == pytest.approx(1.0) and same.max_abs == 0.0 and not same.violations(Tolerance(0.9999))
    overflowed = compare([[np.array([[2e198, 1.0]])]], [[np.array([[np.inf, 1.0]], dtype=np.float32)]])
    assert overflowed.cosine == 0.0 and overflowed.max_abs == float("inf")
    assert overflowed.violations(Tolerance(min_cosine=0.9, max_abs=1.0)) == ["cosine 0.00000 < 0.9",
                                                                              "max-abs inf > 1.0"]


def test_huge_finite_outputs_keep_a_meaningful_cosine():
    reference = np.array([[3e200, -1e199, 5.0]])
    assert compare([[reference]], [[reference * (1 + 1e-9)]]).cosine == pytest.approx(1.0)


def test_zeros_against_values_disagree_instead_of_giving_nan():
    assert compare([[np.zeros((1, 3))]], [[np.array([[1e-300, 0.0, 0.0]])]]).cosine == 0.0
    assert compare([[np.zeros((1, 3))]], [[np.zeros((1, 3))]]).cosine == 1.0


def test_a_nan_cosine_is_a_violation():
    from hub.verify import Fidelity

    assert Fidelity(samples=1, max_abs=float("nan"), cosine=float("nan")).violations(
        Tolerance(min_cosine=0.9, max_abs=1.0)) == ["cosine nan < 0.9", "max-abs nan > 1.0"]


def test_mismatched_output_counts_raise():
    with pytest.raises(ValueError, match="outputs"):
        compare([[np.zeros(3), np.zeros(3)]], [[np.zeros(3)]])


def test_input_flag_parsing():
    assert parse_input_flag("x:1,3,224,224") == TensorSpec("x", (1, 3, 224, 224), "float32")
    assert parse_input_flag("ids:1,?:int64") == TensorSpec("ids", (1, None), "int64")
    with pytest.raises(UsageError, match="NAME:SHAPE"):
        parse_input_flag("x=1,3")


def test_merge_rejects_unknown_input_names():
    declared = (TensorSpec("image", (1, 1, 8, 8)),)
    assert merge_specs(declared, [TensorSpec("image", (1, 1, 8, 8), "float32")]) == declared
    with pytest.raises(UsageError, match="not inputs of the model"):
        merge_specs(declared, [TensorSpec("x", (1,))])


def test_npz_single_array_serves_a_single_input_and_shapes_are_checked(tmp_path):
    spec = (TensorSpec("image", (1, 1, 8, 8)),)
    np.savez(tmp_path / "c.npz", anything=np.ones((5, 1, 8, 8)))
    samples = load_samples(tmp_path / "c.npz", spec)
    assert samples.count == 5 and samples.arrays["image"].dtype == np.float32
    assert samples.feeds(2)[1]["image"].shape == (1, 1, 8, 8)
    np.savez(tmp_path / "bad.npz", image=np.ones((5, 3, 8, 8)))
    with pytest.raises(UsageError, match=r"wants \(samples, 1, 8, 8\)"):
        load_samples(tmp_path / "bad.npz", spec)
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(UsageError, match="cannot read calibration data"):
        load_samples(tmp_path / "junk.npz", spec)


def test_image_folder_is_resized_to_the_input(tmp_path):
    from PIL import Image

    for index in range(3):
        Image.fromarray(np.full((20, 30, 3), index * 100, dtype=np.uint8)).save(tmp_path / f"{index}.png")
    samples = load_samples(tmp_path, (TensorSpec("x", (1, 3, 8, 8)),))
    assert samples.arrays["x"].shape == (3, 3, 8, 8)
    assert samples.arrays["x"][2].max() == pytest.approx(200 / 255)
    assert "resized to 8x8" in samples.origin


def test_random_samples_are_seeded_and_need_static_shapes():
    spec = (TensorSpec("x", (1, 4)),)
    assert np.array_equal(random_samples(spec).arrays["x"], random_samples(spec).arrays["x"])
    with pytest.raises(UsageError, match="dynamic"):
        random_samples((TensorSpec("x", (1, None)),))


def test_inputs_whose_first_dimension_is_not_a_batch_of_one(tmp_path):
    vector, fixed_batch = TensorSpec("x", (5,)), TensorSpec("y", (2, 3))
    np.savez(tmp_path / "c.npz", x=np.ones((4, 5)), y=np.ones((4, 2, 3)))
    samples = load_samples(tmp_path / "c.npz", (vector, fixed_batch))
    feeds = samples.feeds()
    assert len(feeds) == 4 and feeds[0]["x"].shape == (5,) and feeds[0]["y"].shape == (2, 3)
    assert random_samples((vector, fixed_batch), count=3).feeds()[2]["y"].shape == (2, 3)
    np.savez(tmp_path / "one.npz", x=np.ones(5), y=np.ones((2, 3)))  # a single sample, no sample axis
    assert load_samples(tmp_path / "one.npz", (vector, fixed_batch)).count == 1


def test_a_model_with_a_vector_input_converts_end_to_end(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import hub

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        [numpy_helper.from_array(np.arange(5, dtype=np.float32), "scale")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "vector.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((6, 5)))
    result = hub.convert(tmp_path / "vector.onnx", to="onnxruntime-cpu", calibration=tmp_path / "calib.npz",
                         output=tmp_path / "out")
    assert result.report.source["inputs"] == [{"name": "x", "shape": [5], "dtype": "float32"}]
    assert result.report.final.fidelity.samples == 6 and result.report.final.fidelity.max_abs == 0
