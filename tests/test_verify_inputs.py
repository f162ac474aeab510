from __future__ import annotations

import numpy as np
import pytest

from hub.declarations import StepContext, Tolerance
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


def test_a_scalar_input_is_fed_as_a_zero_dimensional_array(tmp_path):
    rate = TensorSpec("sr", (), "int64")
    np.savez(tmp_path / "c.npz", sr=np.full(3, 16000, np.int64))
    feeds = load_samples(tmp_path / "c.npz", (rate,)).feeds()
    assert len(feeds) == 3 and isinstance(feeds[1]["sr"], np.ndarray) and feeds[1]["sr"].shape == ()
    ctx = StepContext(input_path=tmp_path, workdir=tmp_path, options={}, inputs=(rate,), calibration=tmp_path / "c.npz")
    assert all(isinstance(feed["sr"], np.ndarray) and int(feed["sr"]) == 16000 for feed in ctx.calibration_feeds())


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


def _named(samples, names):
    from hub.verify import Outputs

    return Outputs(samples, tuple(names))


def test_outputs_a_converter_reordered_are_paired_by_name():
    rng = np.random.default_rng(0)
    boxes, scores = rng.normal(size=(1, 4)), rng.normal(size=(1, 10))
    reference = _named([[boxes, scores]], ["boxes", "scores"])
    reordered = _named([[scores, boxes]], ["scores:0", "serving_default_boxes"])
    fidelity = compare(reference, reordered)
    assert [(o.name, o.matched, o.matched_by) for o in fidelity.outputs] == [
        ("boxes", "serving_default_boxes", "name"), ("scores", "scores:0", "name")]
    assert fidelity.cosine == pytest.approx(1.0) and fidelity.max_abs == 0.0


def test_unnamed_outputs_are_paired_by_shape_not_position():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1, 3, 8)), rng.normal(size=(1, 5))
    fidelity = compare([[a, b]], _named([[b, a]], ["", ""]))
    assert {o.matched_by for o in fidelity.outputs} == {"shape"}
    assert fidelity.cosine == pytest.approx(1.0)


def test_a_detector_losing_its_small_scores_is_rejected_though_the_whole_cosine_is_high():
    """One output (1, 8400, 6): four box coordinates in pixels beside two class scores in 0..1. Quantizing the
    scores away keeps the whole-tensor cosine near 1; the slice along the feature axis catches it."""
    rng = np.random.default_rng(2)
    reference = [[np.concatenate([rng.uniform(0, 320, (1, 8400, 4)), rng.uniform(0, 1, (1, 8400, 2))], axis=2)]
                 for _ in range(4)]
    scores_lost = [[np.concatenate([sample[0][..., :4], np.zeros((1, 8400, 2))], axis=2)] for sample in reference]
    fidelity = compare(reference, scores_lost)
    assert fidelity.cosine > 0.999
    (output,) = fidelity.outputs
    assert output.kind == "tensor" and output.slice_axis == 2 and output.worst_slice in (4, 5)
    violations = fidelity.violations(Tolerance(min_cosine=0.98))
    assert len(violations) == 1 and violations[0].startswith(f"slice {output.worst_slice} along axis 2")
    assert "mixes scales" in violations[0] and output.worst_slice_share < 1 / 300  # named: no rung can fix it
    slightly_off = [[sample[0] * (1 + 1e-3 * rng.standard_normal(sample[0].shape))] for sample in reference]
    assert not compare(reference, slightly_off).violations(Tolerance(min_cosine=0.98))


def test_near_zero_slices_are_not_judged_by_the_direction_of_their_rounding_noise():
    """A text-probability map (1, 1, 64, 96): text rows near 1, background rows near 1e-7. A float-exact step
    changes the background only by rounding, which turns its direction at random: that is no lost part."""
    rng = np.random.default_rng(4)
    reference, rounded = [], []
    for _ in range(4):
        page = rng.uniform(0, 1e-7, (1, 1, 64, 96))
        page[..., 20:30, :] = rng.uniform(0.5, 1.0, (1, 1, 10, 96))
        reference.append([page])
        rounded.append([np.where(page < 1e-3, rng.uniform(0, 1e-7, page.shape), page)])
    fidelity = compare(reference, rounded)
    assert not fidelity.violations(Tolerance(min_cosine=0.9999)), fidelity.outputs[0]
    text_lost = [[np.where(sample[0] > 0.5, 0.01, sample[0])] for sample in reference]
    assert compare(reference, text_lost).violations(Tolerance(min_cosine=0.9999))


def test_a_one_channel_map_has_no_feature_slices_and_channels_last_images_slice_by_channel():
    """Rows of a (1, 1, H, W) probability map are places: int8 zeroing a faint background row (values 4e-3, one
    int8 step) loses nothing the task reads. A channels-last (1, H, W, C) image slices along C."""
    rng = np.random.default_rng(5)
    page = rng.uniform(0, 1, (1, 1, 32, 48))
    page[:, :, 7, :] = 4e-3
    zeroed = page.copy()
    zeroed[:, :, 7, :] = 0.0
    fidelity = compare([[page]], [[zeroed]])
    assert fidelity.outputs[0].slice_axis is None and not fidelity.violations(Tolerance(min_cosine=0.98))
    image = rng.uniform(0, 1, (1, 16, 16, 3))
    channel_lost = image.copy()
    channel_lost[..., 2] = rng.uniform(0, 1, (1, 16, 16))
    (output,) = compare([[image]], [[channel_lost]]).outputs
    assert output.slice_axis == 3 and output.worst_slice == 2


def test_embeddings_are_not_held_to_class_agreement():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(8, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = [[v[None]] for v in vectors]
    noisy = [[v[None] + 0.003 * rng.normal(size=(1, 384))] for v in vectors]
    fidelity = compare(reference, noisy)
    assert fidelity.outputs[0].kind == "embedding" and fidelity.top1_agreement is None
    assert fidelity.cosine > 0.99 and not fidelity.violations(Tolerance(min_cosine=0.99, min_top1=0.99))
    named = compare(_named([[v[None] * 3] for v in vectors], ["sentence_embedding"]), noisy)
    assert named.outputs[0].kind == "embedding"


def test_each_output_is_judged_on_its_own():
    good, bad = np.arange(1.0, 11.0)[None], np.array([[1.0, 2.0, 3.0]])
    fidelity = compare(_named([[good, bad]], ["logits", "offsets"]),
                       _named([[good, -bad]], ["logits", "offsets"]))
    assert fidelity.violations(Tolerance(min_cosine=0.99)) == ["output offsets: cosine -1.00000 < 0.99"]
    assert fidelity.cosine == pytest.approx(-1.0)


def test_input_names_may_hold_colons_and_minus_one_is_dynamic():
    assert parse_input_flag("serving_default_x:0:1,224,224,3") == TensorSpec("serving_default_x:0", (1, 224, 224, 3))
    assert parse_input_flag("x:1,-1,3:int64") == TensorSpec("x", (1, None, 3), "int64")
    assert TensorSpec("images", (-1, 3, 0, 640)).shape == (None, 3, 0, 640)


def test_dynamic_dimensions_take_the_calibration_samples_shapes(tmp_path):
    from hub.inputs import with_sample_shapes

    specs = (TensorSpec("images", (-1, 3, None, None)), TensorSpec("scale", (2,)))
    path = tmp_path / "calib.npz"
    np.savez(path, images=np.zeros((5, 3, 48, 64), np.float32), scale=np.ones((5, 2), np.float32))
    samples = load_samples(path, specs)
    assert with_sample_shapes(specs, samples) == (TensorSpec("images", (1, 3, 48, 64)), TensorSpec("scale", (2,)))


def _text_reads(rng: np.random.Generator, reads: int, steps: int = 40, characters: int = 30) -> list[np.ndarray]:
    """Softmaxed CTC outputs (1, steps, characters): mostly the blank (class 0), a character every few steps."""
    samples = []
    for _ in range(reads):
        logits = rng.normal(0, 1, (1, steps, characters))
        logits[0, :, 0] += 8.0
        for step in range(2, steps, 4):
            logits[0, step, rng.integers(1, characters)] += 14.0
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        samples.append(exp / exp.sum(axis=-1, keepdims=True))
    return samples


def test_a_text_read_that_loses_characters_is_rejected_though_the_blanks_agree():
    rng = np.random.default_rng(5)
    reads = _text_reads(rng, 8)
    misread = []
    for read in reads:  # one character in five read as its neighbour in the alphabet
        wrong = read.copy()
        for step in range(2, read.shape[1], 20):
            wrong[0, step, 1:] = np.roll(read[0, step, 1:], 1)
        misread.append([wrong])
    fidelity = compare([[r] for r in reads], misread)
    (output,) = fidelity.outputs
    assert output.kind == "class-map" and output.class_axis == 2 and output.background_class == 0
    plain = np.mean([np.argmax(r, -1) == np.argmax(w[0], -1) for r, w in zip(reads, misread)])
    assert plain > 0.9  # agreement over every step, blanks included, would let it through
    assert output.top1_agreement < 0.85 and output.positions_compared == 8 * 10
    assert any("top-1 agreement" in v for v in fidelity.violations(Tolerance(min_cosine=0.5, min_top1=0.9)))
    noisy = [[np.clip(r + 1e-4 * rng.standard_normal(r.shape), 0, None)] for r in reads]
    assert compare([[r] for r in reads], noisy).top1_agreement == 1.0


def test_a_per_pixel_class_map_is_judged_on_its_foreground():
    """A face map (1, 2, H, W): background/face probabilities along the channels."""
    rng = np.random.default_rng(6)
    face = rng.uniform(0, 1, (4, 1, 1, 12, 12)) ** 6  # mostly background
    maps = [np.concatenate([1 - f, f], axis=1) for f in face]
    fidelity = compare([[m] for m in maps], [[m[:, ::-1]] for m in maps])
    (output,) = fidelity.outputs
    assert output.kind == "class-map" and output.class_axis == 1 and output.background_class == 0
    assert output.top1_agreement == 0.0
    assert compare([[m] for m in maps], [[m] for m in maps]).top1_agreement == 1.0
    assert compare([[f] for f in face], [[f] for f in face]).outputs[0].kind == "tensor"  # one channel: no classes


def test_a_class_map_flipping_only_undecided_positions_agrees_and_one_losing_decided_positions_does_not():
    """A face map whose faces have rims at 0.5: int8 noise flips rims, which changes no answer; a map that
    smears the decided faces into undecided scores does."""
    rng = np.random.default_rng(7)
    face = np.zeros((6, 1, 1, 12, 12))
    face[:, :, :, 3:9, 3:9] = 0.9
    face[:, :, :, 2, 2:10] = face[:, :, :, 9, 2:10] = 0.5  # the rims: undecided
    maps = [np.concatenate([1 - f, f], axis=1) for f in face]
    jitter = [np.clip(f + rng.choice([-0.03, 0.03], f.shape) * (f == 0.5), 0, 1) for f in face]
    flipped = compare([[m] for m in maps], [[np.concatenate([1 - j, j], axis=1)] for j in jitter]).outputs[0]
    assert flipped.kind == "class-map" and flipped.top1_agreement == 1.0
    assert flipped.positions_compared == 6 * 36
    smeared = [np.where(f > 0.5, 0.45, f) for f in face]  # every face now a shade under undecided
    lost = compare([[m] for m in maps], [[np.concatenate([1 - s, s], axis=1)] for s in smeared]).outputs[0]
    assert lost.top1_agreement == 0.0 and lost.positions_compared == 6 * 36


def test_top1_is_held_where_a_side_decides_and_flips_between_near_ties_do_not_fail_it():
    tolerance = Tolerance(min_cosine=0.5, min_top1=0.9)
    decided = [np.array([[6.0, 0.0, 0.0]]), np.array([[0.0, 6.0, 0.0]]), np.array([[0.0, 0.0, 6.0]])]
    near_ties = [np.array([[1.0, 0.95, -3.0]]), np.array([[-3.0, 2.0, 2.1]])]
    reference = [[a] for a in decided + near_ties]
    swapped = [[a] for a in decided] + [[t[:, [1, 0, 2]]] for t in near_ties[:1]] + [[near_ties[1][:, [0, 2, 1]]]]
    (output,) = compare(reference, swapped).outputs
    assert output.top1_agreement == pytest.approx(0.6) and output.decided_samples == 3
    assert output.decided_top1_agreement == 1.0 and output.violations(tolerance) == []
    confidently_wrong = [[a] for a in decided] + [[np.array([[0.0, 0.0, 9.0]])], [near_ties[1]]]
    (wrong,) = compare(reference, confidently_wrong).outputs  # the candidate decides a near tie otherwise
    assert wrong.decided_samples == 4 and wrong.decided_top1_agreement == 0.75
    assert any("top-1 agreement 0.750" in v for v in wrong.violations(tolerance))


def test_detector_logits_that_lose_their_positive_scores_are_rejected_though_the_cosine_is_high():
    """Per-anchor logits (1, anchors, 1): far below zero but at the few anchors that hold a face. An int8 output
    scale that rounds every positive logit to 0 keeps the cosine and loses every detection."""
    rng = np.random.default_rng(8)
    logits = [-rng.uniform(5, 500, (1, 896, 1)) for _ in range(6)]
    for sample in logits:
        sample[0, rng.choice(896, 4, replace=False), 0] = rng.uniform(1, 3, 4)
    clipped = [[np.minimum(sample, 0.0)] for sample in logits]
    (output,) = compare([[s] for s in logits], clipped).outputs
    assert output.kind == "tensor" and output.cosine > 0.999 and output.decision_agreement == 0.0
    assert any("decision agreement" in v for v in output.violations(Tolerance(min_cosine=0.98, min_top1=0.9)))
    noisy = [[s + rng.normal(0, 0.1, s.shape)] for s in logits]
    assert compare([[s] for s in logits], noisy).outputs[0].decision_agreement == 1.0
    boxes = [rng.normal(0, 50, (1, 896, 16)) for _ in range(6)]  # both signs alike: no decisions to judge
    assert compare([[b] for b in boxes], [[b] for b in boxes]).outputs[0].decision_agreement is None


def test_a_probability_map_that_loses_its_onsets_is_rejected_though_the_cosine_is_high():
    """A sigmoid map (1, frames, notes), near 0 but for a few onsets: an int8 result that pulls the onsets under
    one half keeps a high cosine and loses the notes. Noise of int8's usual size, or a map with nothing above
    one half, passes."""
    rng = np.random.default_rng(9)
    onsets = [rng.uniform(0, 0.2, (1, 172, 88)) for _ in range(4)]
    for sample in onsets:
        sample[0, rng.choice(172, 20), rng.choice(88, 20)] = rng.uniform(0.7, 0.95, 20)
    dimmed = [[np.where(s > 0.5, s * 0.4, s)] for s in onsets]
    (output,) = compare([[s] for s in onsets], dimmed).outputs
    assert output.kind == "tensor" and output.cosine > 0.98 and output.decision_agreement == 0.0
    assert any("probability above one half" in v for v in output.violations(Tolerance(min_cosine=0.98, min_top1=0.9)))
    noisy = [[np.clip(s + rng.normal(0, 0.01, s.shape), 0, 1)] for s in onsets]
    assert compare([[s] for s in onsets], noisy).outputs[0].decision_agreement == 1.0
    faint = [s * 0.5 for s in onsets]  # nothing above one half: no decisions to judge
    assert compare([[s] for s in faint], [[s] for s in faint]).outputs[0].decision_agreement is None


def test_one_probability_per_sample_is_judged_by_its_decision_and_across_samples():
    """A (1, 1) speech probability: a per-sample cosine of one positive value is 1 whatever the value, so an
    int8 result that read 0.1 for 0.9 passed. Read as (1 - p, p), its decisions must agree."""
    speech = [np.array([[p]], np.float32) for p in (0.95, 0.9, 0.05, 0.02, 0.85, 0.1, 0.93, 0.04)]
    flipped = [np.array([[1.0 - p[0, 0]]], np.float32) if i % 2 else p for i, p in enumerate(speech)]
    (output,) = compare([[p] for p in speech], [[p] for p in flipped]).outputs
    assert output.kind == "probability" and output.decided_top1_agreement == 0.5
    assert output.cosine < 0.9  # the pair (1 - p, p): no longer 1
    violations = output.violations(Tolerance(min_cosine=0.98, min_top1=0.9))
    assert any("top-1 agreement 0.500" in v for v in violations) and any("cosine" in v for v in violations)
    close = [[p + np.float32(0.01) * (-1) ** i] for i, p in enumerate(speech)]
    (kept,) = compare([[p] for p in speech], close).outputs
    assert kept.decided_top1_agreement == 1.0 and kept.violations(Tolerance(min_cosine=0.98, min_top1=0.9)) == []
    logits = [np.array([[value]]) for value in (3.0, 2.5, -2.0, 4.0)]  # no probability: judged across samples
    (scalar,) = compare([[v] for v in logits], [[v * (-1) ** i] for i, v in enumerate(logits)]).outputs
    assert scalar.kind == "tensor" and scalar.cosine < 0.5


def test_outputs_a_converter_left_in_the_source_layout_are_not_moved_back():
    from hub.verification import from_layout

    moved, left, square = np.zeros((1, 5, 7, 3)), np.zeros((1, 896, 16)), np.zeros((1, 4, 4))
    source_shapes = {(1, 3, 5, 7), (1, 896, 16), (1, 4, 4)}
    assert from_layout(moved, "nhwc", source_shapes).shape == (1, 3, 5, 7)
    assert from_layout(left, "nhwc", source_shapes).shape == (1, 896, 16)
    assert from_layout(left, "nhwc").shape == (1, 16, 896)  # no reference known yet: the declared layout
    assert from_layout(square, "nhwc", source_shapes).shape == (1, 4, 4)


def test_a_sequence_is_also_judged_whole():
    """Lines of text: one character wrong in one line of four leaves 97% of the characters but 75% of the
    lines; a read that only moves a character by a step, or repeats it, still says the same."""
    rng = np.random.default_rng(7)
    reads = _text_reads(rng, 4)
    shifted, misread = [], []
    for index, read in enumerate(reads):
        later = read.copy()
        later[0, 3] = read[0, 2]  # the character at step 2 read again at step 3: the same text
        shifted.append([later])
        wrong = read.copy()
        if index == 0:
            wrong[0, 6, 1:] = np.roll(read[0, 6, 1:], 1)
        misread.append([wrong])
    same = compare([[r] for r in reads], shifted).outputs[0]
    assert same.sequence_agreement == 1.0 and same.top1_agreement < 1.0
    (output,) = compare([[r] for r in reads], misread).outputs
    assert output.top1_agreement > 0.95 and output.sequence_agreement == 0.75
    assert compare([[r] for r in reads], misread).violations(Tolerance(min_cosine=0.5, min_top1=0.9)) == [
        "sequence agreement 0.750 < 0.9"]


def test_strings_and_booleans_are_compared_exactly():
    words = [[np.array(["tuesday", "friday"])], [np.array(["may"])]]
    same = compare(words, [[np.array(["tuesday", "friday"], dtype=object)], [np.array(["may"])]])
    assert same.outputs[0].kind == "exact" and not same.violations(Tolerance(min_cosine=0.9999))
    changed = compare(words, [[np.array(["tuesday", "friday"])], [np.array(["june"])]])
    assert changed.outputs[0].exact_agreement == 0.5
    assert changed.violations(Tolerance(min_cosine=0.5)) == ["exact agreement 0.500 < 1 (strings and booleans "
                                                             "must match)"]
    flags = [[np.array([True, False])]]
    assert compare(flags, [[np.array([True, True])]]).violations(Tolerance(min_cosine=0.0))


def detector_outputs(rng: np.random.Generator, samples: int = 6) -> list[list[np.ndarray]]:
    """An SSD-style detector's two outputs per sample: (1, 300, 4) boxes and (1, 300, 1) logits, positive at a
    few anchors."""
    outputs = []
    for _ in range(samples):
        logits = -rng.uniform(2, 300, (1, 300, 1))
        logits[0, rng.choice(300, 5, replace=False), 0] = rng.uniform(1, 4, 5)
        outputs.append([rng.normal(0, 80, (1, 300, 4)), logits])
    return outputs


def test_boxes_beside_scores_are_judged_where_an_object_was_found():
    rng = np.random.default_rng(16)
    reference = detector_outputs(rng)
    tolerance = Tolerance(min_cosine=0.98, min_top1=0.9)
    # boxes scrambled where nothing was found: never decoded, so no violation
    background_noise = []
    for boxes, logits in reference:
        noisy = boxes.copy()
        nothing = logits[0, :, 0] < 0
        noisy[0, nothing] += rng.normal(0, 80, (int(nothing.sum()), 4))
        background_noise.append([noisy, logits])
    boxes, scores = compare(reference, background_noise).outputs
    assert boxes.anchors_judged == 30 and boxes.cosine == pytest.approx(1.0) and boxes.whole_cosine < 0.8
    assert boxes.violations(tolerance) == [] and scores.decision_agreement == 1.0
    # the same noise on the anchors that hold an object is rejected
    found_noise = []
    for boxes, logits in reference:
        noisy = boxes.copy()
        found = logits[0, :, 0] > 0
        noisy[0, found] += rng.normal(0, 80, (int(found.sum()), 4))
        found_noise.append([noisy, logits])
    boxes, _ = compare(reference, found_noise).outputs
    assert boxes.anchors_judged == 30 and any("cosine" in v for v in boxes.violations(tolerance))
