"""Knowledge distillation: a compressed torch.export program (the student) learns the source's outputs (the
teacher) on unlabelled samples, on the CPU, for a bounded number of optimizer steps. torch is imported inside
functions.

The student trains as the program's own unlifted module (program.module()): its parameters take gradients
through the aten ops, batch norms stay in inference mode (their statistics are frozen, as the exported graph
says), and the trained values are written back into the program's state_dict, which is saved again: no
re-export, so the graph is exactly the one that was verified before. Weights that pruning zeroed are kept at
zero by re-applying their masks after every optimizer step.

Few samples are the usual case (a calibration set), so two things make the student agree with the teacher on
inputs it never saw. Image inputs are augmented on the fly (random crops resized back, left-right flips) and the
teacher labels each augmented batch: the student sees many more views than there are samples. And the student
learns the teacher's intermediate values too, not only its outputs (`FeatureMatch`): the inputs of the pruned
layers, which carry far more signal per sample than 1000 logits. When the route goes on to int8 (the hub passes
the later precisions in LATER_PRECISIONS), the student trains at its int8-rounded weights (`WeightRounding`), so
that the quantization step after it loses almost nothing.

Measured on EfficientNet-Lite0 at 50% sparsity, 150 steps, logit cosine on photos it never saw (0.55 before): outputs
only, lr 1e-4: 0.797; with feature matching (weight 5) 0.829, weight 20 0.837; weight 20 at lr 3e-4 0.849, weight 50
0.851; through the hub, 450 steps: 0.857 (0.973 on crops of the photos it trained on: the variety of the samples, not
the steps, is what limits it). Through the hub, 450 steps, with 11 more photos among the samples: 0.899; with 20
ImageNet photos more, 0.897; 900 steps: 0.902. Its weights rounded to int8 in torch: 0.890. Trained with WeightRounding
instead: int8 through ONNX Runtime 0.899 (its fp32 weights 0.898, rounded in torch 0.899). 1200 steps: 0.905; int8
(rounded from halfway on) 0.902. Tried and not kept (150 steps, with the added photos: 0.885): a Hessian-aware mask
(SparseGPT's OBS updates from the samples: 0.76 before training instead of 0.55, but 0.77 after; its mask alone, weights
unchanged, 0.83 after), Wanda's |w|*||x|| mask (0.49 before), a lighter-pruned classifier (30% of it: 0.815), a moving
average of the weights (0.882), lr 6e-4 (0.882), an L2 pull towards the source's weights (0.754 at 1e1 x the squared
distance), 7 more photos (0.882), re-estimating the batch-norm statistics (0.55 -> 0.50 before training), mixup (0.64 at
lr 3e-4 without features), colour jitter (+0.003), gradual pruning from the dense weights during training (0.836),
LAMP's layer-adaptive sparsity instead of global magnitude (0.73), pruning the classifier harder so the convolutions
keep more (80% of it: 0.665 after 100 steps). A program exported with a static batch of one trains a row at a time
(slow, and its features are matched on the last row only): export with a dynamic batch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from hub.declarations import LATER_PRECISIONS, StepContext
from hub.errors import UsageError
from hub.report import compressed_size
from hub_torch.detect import is_torch_export, is_torchscript
from hub_torch.options import DISTILL_DEFAULTS
from hub_torch.prune import save_program
from hub_torch.tensors import call_program, load_program, program_input_names, program_input_specs

if TYPE_CHECKING:
    import torch

MAX_HOLDOUT = 64
MIN_IMAGE_SIDE = 32
MAX_IMAGE_CHANNELS = 4


def distill(ctx: StepContext) -> Path:
    """torch-export fp32 (+pruned or +channels-pruned) -> +distilled. Teacher: options["source_path"] (a .pt2 or
    TorchScript file); samples: options["samples"] (an .npz keyed by input name, or one array for a one-input
    model)."""
    import torch

    options = {**DISTILL_DEFAULTS, **ctx.options}
    started = time.perf_counter()
    torch.manual_seed(int(options["seed"]))
    if int(options["threads"]) > 0:
        torch.set_num_threads(int(options["threads"]))
    program = load_program(ctx.input_path)
    names = program_input_names(program)
    samples = load_distillation_samples(options.get("samples"), names, program)
    teacher, teacher_module = load_teacher(options.get("source_path"), names)
    student = program.module()
    parameters = [p for p in student.parameters() if p.dtype.is_floating_point]
    masks = {id(p): (p != 0) for p in parameters if p.dim() > 1 and bool((p == 0).any())}
    features = FeatureMatch.between(student, teacher_module, masks, float(options["feature_weight"]))
    rounding = WeightRounding.for_route(student, options)
    holdout_count = min(MAX_HOLDOUT, int(len(samples[0]) * float(options["holdout_fraction"])))
    train_rows = np.arange(len(samples[0]) - holdout_count)
    holdout_rows = np.arange(len(samples[0]) - holdout_count, len(samples[0]))
    if len(train_rows) == 0:
        raise UsageError(f"{options['samples']} holds too few samples to distill on: give at least a few dozen")
    with torch.no_grad():
        targets = [teacher([torch.from_numpy(array[row:row + 1]) for array in samples])
                   for row in range(len(samples[0]))]
    call = rows_caller(student_outputs(program, student), samples)
    before_train = fidelity(call, targets, train_rows[:MAX_HOLDOUT])
    before_holdout = fidelity(call, targets, holdout_rows) if holdout_count else None

    augment = bool(options["augment"]) and is_image_batch(samples)
    batches = TrainingBatches(samples, train_rows, targets, teacher, int(options["batch"]), int(options["seed"]),
                              min_crop=float(options["min_crop"]) if augment else None,
                              teacher_every_batch=features is not None)
    losses = train_student(student_outputs(program, student), parameters, masks, batches, features, rounding,
                           options, started)

    trained = dict(student.named_parameters())
    with torch.no_grad():
        for name, tensor in program.state_dict.items():
            if name in trained:
                tensor.copy_(trained[name].detach())
    output = save_program(program, ctx.workdir / "model.pt2")
    after_train = fidelity(call, targets, train_rows[:MAX_HOLDOUT])
    after_holdout = fidelity(call, targets, holdout_rows) if holdout_count else None
    kept_zero = all(bool((p[~masks[id(p)]] == 0).all()) for p in parameters if id(p) in masks)
    ctx.notes.update(
        teacher=Path(str(options["source_path"])).name, samples=len(samples[0]), train_samples=len(train_rows),
        holdout_samples=holdout_count, steps=len(losses), batch=int(options["batch"]), lr=float(options["lr"]),
        optimizer="AdamW, warm-up then cosine decay", temperature=float(options["temperature"]),
        feature_weight=float(options["feature_weight"]) if features else 0.0,
        augmentation=(f"random crops (side {options['min_crop']}-1.0) resized back, left-right flips; teacher "
                      "labels every batch") if augment else None,
        matched_layers=len(features.names) if features else 0,
        quantization_aware=(f"int8 weights (symmetric, per output channel) from {rounding.start:.0%} of the "
                            f"training on: {len(rounding.weights)} layers") if rounding else None,
        loss_first=round(losses[0], 6) if losses else None,
        loss_last=round(float(np.mean(losses[-10:])), 6) if losses else None,
        fidelity_before={"train": before_train, "holdout": before_holdout},
        fidelity_after={"train": after_train, "holdout": after_holdout},
        masked_parameters=len(masks), pruned_weights_kept_zero=kept_zero,
        seconds=round(time.perf_counter() - started, 2), **compressed_size(output),
    )
    return output


class TrainingBatches:
    """Random training batches: the student's feeds and the teacher's outputs for them. Without augmentation
    (min_crop None) the teacher's outputs on the plain samples are reused, unless the teacher must run on every
    batch (to record its features); with it, every batch is a fresh set of random crops and flips, labelled by
    running the teacher on it."""

    def __init__(self, samples: list[np.ndarray], rows: np.ndarray, targets: list[list["torch.Tensor"]],
                 teacher: Callable[[list["torch.Tensor"]], list["torch.Tensor"]], batch: int, seed: int,
                 min_crop: float | None, teacher_every_batch: bool = False) -> None:
        import torch

        self.samples, self.rows, self.targets, self.teacher = samples, rows, targets, teacher
        self.batch, self.min_crop = min(batch, len(rows)), min_crop
        self.teacher_every_batch = teacher_every_batch
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[list["torch.Tensor"], list["torch.Tensor"]]:
        import torch

        rows = self.rng.choice(self.rows, size=self.batch, replace=False)
        feeds = [torch.from_numpy(np.ascontiguousarray(array[rows])) for array in self.samples]
        if self.min_crop is None and not self.teacher_every_batch:
            return feeds, [torch.cat([self.targets[r][i] for r in rows]) for i in range(len(self.targets[0]))]
        if self.min_crop is not None:
            feeds = [random_crops_and_flips(feeds[0], self.min_crop, self.torch_rng)]
        with torch.no_grad():
            return feeds, self.teacher(feeds)


def is_image_batch(samples: list[np.ndarray]) -> bool:
    """One float input shaped (N, C, H, W) with few channels and image-sized sides: crops and flips keep its
    meaning. Anything else (tokens, tables, several inputs, channels-last) is not augmented."""
    if len(samples) != 1 or samples[0].ndim != 4 or samples[0].dtype.kind != "f":
        return False
    _, channels, height, width = samples[0].shape
    return channels <= MAX_IMAGE_CHANNELS and min(height, width) >= MIN_IMAGE_SIDE


def random_crops_and_flips(images: "torch.Tensor", min_crop: float, generator: "torch.Generator") -> "torch.Tensor":
    """Per image: a square-ish crop whose sides are min_crop..1 of the image's, resized back bilinearly, and
    flipped left-right half the time. Same shape as the input."""
    import torch
    from torch.nn import functional

    height, width = images.shape[-2:]
    views = []
    for image in images:
        scale = min_crop + (1.0 - min_crop) * float(torch.rand((), generator=generator))
        crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
        top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
        left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
        view = functional.interpolate(image[None, :, top:top + crop_h, left:left + crop_w], size=(height, width),
                                      mode="bilinear", align_corners=False)
        views.append(view.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else view)
    return torch.cat(views)


def scheduled_lr(peak: float, step: int, warmup_steps: int, progress: float) -> float:
    """Linear warm-up over the first steps, then cosine decay to zero as progress (0..1, steps or seconds used)
    reaches 1."""
    warmup = min(1.0, (step + 1) / max(warmup_steps, 1))
    return peak * warmup * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def distillation_loss(student: Sequence["torch.Tensor"], teacher: Sequence["torch.Tensor"], temperature: float,
                      kl_weight: float, mse_weight: float) -> "torch.Tensor":
    """KL divergence on temperature-softened class scores (2-D outputs), scaled by T² as in Hinton et al., plus
    MSE on every output."""
    import torch
    from torch.nn import functional

    total = torch.zeros(())
    for mine, theirs in zip(student, teacher):
        mine, theirs = mine.float(), theirs.float()
        if kl_weight and mine.dim() == 2 and mine.shape[1] > 1:
            total = total + kl_weight * temperature ** 2 * functional.kl_div(
                functional.log_softmax(mine / temperature, dim=1), functional.log_softmax(theirs / temperature, dim=1),
                reduction="batchmean", log_target=True)
        if mse_weight:
            total = total + mse_weight * functional.mse_loss(mine, theirs)
    return total


class FeatureMatch:
    """The student learns the teacher's intermediate values, not only its outputs: the input of every layer
    whose weights pruning masked, compared with the same node of the teacher's graph. A call that records the
    value is inserted after those nodes in both graph modules (their results do not change), so every forward
    pass leaves them in `student` and `teacher`. Only a pruned student of the teacher's own graph qualifies (node
    names and shapes match); a channel-pruned one or a TorchScript teacher does not."""

    def __init__(self, student: "torch.fx.GraphModule", teacher: "torch.fx.GraphModule", names: list[str],
                 weight: float) -> None:
        self.names, self.weight = names, weight
        self.student, self.teacher = record_nodes(student, names), record_nodes(teacher, names)

    @classmethod
    def between(cls, student: Any, teacher: Any, masks: dict[int, "torch.Tensor"],
                weight: float) -> "FeatureMatch | None":
        if weight <= 0 or teacher is None or not masks:
            return None
        names = pruned_layer_inputs(student, masks)
        teacher_nodes = {node.name for node in teacher.graph.nodes}
        names = [name for name in names if name in teacher_nodes]
        return cls(student, teacher, names, weight) if names else None

    def loss(self) -> "torch.Tensor":
        """weight x the mean over layers of MSE(student, teacher) / mean(teacher²), on the last batch both ran.
        Relative errors: layers of every scale count alike."""
        import torch
        from torch.nn import functional

        terms = [functional.mse_loss(self.student[name], self.teacher[name])
                 / self.teacher[name].pow(2).mean().clamp_min(1e-12)
                 for name in self.names if self.student[name].shape == self.teacher[name].shape]
        return self.weight * torch.stack(terms).mean() if terms else torch.zeros(())


def record_nodes(module: "torch.fx.GraphModule", names: list[str]) -> dict[str, "torch.Tensor"]:
    """Insert a call after each named node of `module`'s graph that stores its value; returns the dict the values
    land in (replaced on every forward pass)."""
    values: dict[str, "torch.Tensor"] = {}

    def record(value: "torch.Tensor", name: str) -> None:
        values[name] = value

    wanted = set(names)
    for node in [node for node in module.graph.nodes if node.name in wanted]:
        with module.graph.inserting_after(node):
            module.graph.call_function(record, (node, node.name))
    module.recompile()
    return values


def pruned_layer_inputs(module: "torch.fx.GraphModule", masks: dict[int, "torch.Tensor"]) -> list[str]:
    """The names of the nodes that feed the layers whose weights are masked (convolutions and linear layers):
    what each pruned layer sees, i.e. block outputs and the features a classifier reads. Graph inputs are left
    out (nothing before them changed). Measured on EfficientNet-Lite0 at 50% sparsity, 150 steps: the block
    outputs gave a held-out cosine 0.829; the pruned layers' own outputs after their batch norms 0.820."""
    masked = {name for name, parameter in module.named_parameters() if id(parameter) in masks}
    names: list[str] = []
    for node in module.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2 or getattr(node.args[1], "op", None) != "get_attr":
            continue
        source = node.args[0]
        if node.args[1].target in masked and getattr(source, "op", None) == "call_function" \
                and source.name not in names:
            names.append(source.name)
    return names


def train_student(run: Callable[[list["torch.Tensor"]], list["torch.Tensor"]], parameters: list,
                  masks: dict[int, "torch.Tensor"], batches: "TrainingBatches", features: "FeatureMatch | None",
                  rounding: "WeightRounding | None", options: dict[str, Any], started: float) -> list[float]:
    """AdamW on the distillation loss (plus the feature loss, if any) until options["steps"] steps or
    options["max_seconds"] since `started`, whichever comes first; masked (pruned) weights are zeroed again after
    every step. With `rounding`, from its start on, the losses and gradients are those of the rounded weights.
    Returns the losses."""
    import torch

    steps, seconds, peak = int(options["steps"]), float(options["max_seconds"]), float(options["lr"])
    optimizer = torch.optim.AdamW(parameters, lr=peak, weight_decay=0.0)
    for parameter in parameters:
        parameter.requires_grad_(True)
    losses: list[float] = []
    while len(losses) < steps and time.perf_counter() - started < seconds:
        progress = max(len(losses) / steps, (time.perf_counter() - started) / seconds)
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(peak, len(losses), int(options["warmup_steps"]), progress)
        feeds, wanted = batches.next()
        optimizer.zero_grad()
        rounded = rounding is not None and progress >= rounding.start
        if rounded:
            rounding.round()
        loss = distillation_loss(run(feeds), wanted, float(options["temperature"]), float(options["kl_weight"]),
                                 float(options["mse_weight"]))
        if features is not None:
            loss = loss + features.loss()
        loss.backward()
        if rounded:
            rounding.restore()
        optimizer.step()
        with torch.no_grad():
            for parameter in parameters:
                if id(parameter) in masks:
                    parameter.mul_(masks[id(parameter)])
        losses.append(float(loss.detach()))
    return losses


class WeightRounding:
    """Quantization-aware training of the weights, for a route that goes on to int8: every forward and backward
    pass runs at the weights the int8 step will keep, and the optimizer updates the full-precision weights with
    those gradients (the straight-through estimator). The rounding is symmetric per output channel, 127 steps
    each side, as ONNX Runtime's and TFLite's per-channel int8 quantizers do; per-channel scales survive batch-norm
    folding. Measured on EfficientNet-Lite0 pruned 50% and distilled: rounding its weights alone costs 0.009 of
    held-out logit cosine (all of int8's cost: activations add 0.0002); trained this way, the rounded student is
    as good as the full-precision one. Rounding from the start of training or only from halfway on (`start`, a
    fraction of the training) measured the same within run-to-run variation (int8: 0.899 and 0.900 at 900 steps);
    halfway is the default: the first half learns on the smooth, unrounded weights, the second adapts to the
    rounding."""

    def __init__(self, weights: list["torch.Tensor"], start: float = 0.0) -> None:
        self.weights = weights
        self.start = start
        self.kept: list["torch.Tensor"] = []

    @classmethod
    def for_route(cls, module: "torch.fx.GraphModule", options: dict[str, Any]) -> "WeightRounding | None":
        later = set(options.get(LATER_PRECISIONS) or ())
        if not options.get("quantization_aware") or not later & INT8_PRECISIONS:
            return None
        weights = layer_weights(module)
        return cls(weights, float(options.get("quantization_aware_from", 0.0))) if weights else None

    def round(self) -> None:
        import torch

        self.kept = [weight.data for weight in self.weights]
        with torch.no_grad():
            for weight, full in zip(self.weights, self.kept):
                weight.data = int8_rounded(full)

    def restore(self) -> None:
        for weight, full in zip(self.weights, self.kept):
            weight.data = full
        self.kept = []


INT8_PRECISIONS = {"int8", "int8-dynamic"}
LAYER_OPS = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.linear")
CONVOLUTION_OP, TRANSPOSED_ARG = "aten.convolution", 6


def layer_weights(module: "torch.fx.GraphModule") -> list["torch.Tensor"]:
    """The weights of the convolutions and linear layers (output channels first), not those of transposed
    convolutions, whose channel axis differs."""
    parameters = dict(module.named_parameters())
    names: list[str] = []
    for node in module.graph.nodes:
        if is_layer(node) and getattr(node.args[1], "op", None) == "get_attr" and node.args[1].target in parameters:
            names.append(node.args[1].target)
    return [parameters[name] for name in dict.fromkeys(names)]


def is_layer(node: "torch.fx.Node") -> bool:
    if node.op != "call_function" or len(node.args) < 2:
        return False
    target = str(node.target)
    if target.startswith(CONVOLUTION_OP):
        return len(node.args) > TRANSPOSED_ARG and not node.args[TRANSPOSED_ARG]
    return target.startswith(LAYER_OPS)


def int8_rounded(weight: "torch.Tensor") -> "torch.Tensor":
    """`weight` rounded to 255 levels per output channel (axis 0), symmetric around zero."""
    import torch

    scale = weight.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
    scale = scale.view(-1, *[1] * (weight.dim() - 1))
    return torch.round(weight / scale) * scale


def student_outputs(program: Any, module: Any) -> Callable[[list["torch.Tensor"]], list["torch.Tensor"]]:
    """The student (program.module()) as a function of a batch of input tensors returning its flat outputs."""
    import torch
    from torch.utils._pytree import tree_leaves

    def run(feeds: list["torch.Tensor"]) -> list["torch.Tensor"]:
        return [leaf for leaf in tree_leaves(call_program(program, module, feeds)) if isinstance(leaf, torch.Tensor)]
    return rows_if_needed(run)


def rows_caller(run: Callable[[list["torch.Tensor"]], list["torch.Tensor"]],
                samples: list[np.ndarray]) -> Callable[[Sequence[int]], list["torch.Tensor"]]:
    """`run` on the given sample rows."""
    import torch

    return lambda rows: run([torch.from_numpy(np.ascontiguousarray(array[list(rows)])) for array in samples])


def fidelity(call: Callable, targets: list[list["torch.Tensor"]], rows: Sequence[int]) -> dict[str, float] | None:
    """Mean cosine of the first output against the teacher's, and top-1 agreement for class scores."""
    import torch

    if len(rows) == 0:
        return None
    with torch.no_grad():
        outputs = torch.cat([call([row])[0] for row in rows]).flatten(1)
    reference = torch.cat([targets[row][0] for row in rows]).flatten(1)
    cosine = torch.nn.functional.cosine_similarity(outputs, reference, dim=1).mean()
    result = {"cosine": round(float(cosine), 5)}
    if outputs.shape[1] > 1:
        result["top1_agreement"] = round(float((outputs.argmax(1) == reference.argmax(1)).float().mean()), 4)
    return result


def load_distillation_samples(path: Any, names: list[str], program: Any) -> list[np.ndarray]:
    """One array per program input (samples along axis 0), in input order, cast to the inputs' dtypes."""
    if not path:
        raise UsageError("distillation needs unlabelled samples: --distill SAMPLES.npz")
    path = Path(str(path))
    if not path.is_absolute():
        raise UsageError(f"the distillation samples path {path} must be absolute (steps run in their own folder)")
    if not path.exists():
        raise UsageError(f"distillation samples {path} do not exist")
    if path.suffix == ".npy":
        arrays = {names[0]: np.load(path, allow_pickle=False)} if len(names) == 1 else {}
    else:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise UsageError(f"{path.name} has no array for input(s) {', '.join(missing)}; it holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}")
    specs = {spec.name: spec for spec in program_input_specs(program)}
    return [arrays[name].astype(specs[name].dtype if name in specs else arrays[name].dtype) for name in names]


def load_teacher(path: Any, names: list[str]
                 ) -> tuple[Callable[[list["torch.Tensor"]], list["torch.Tensor"]], "torch.fx.GraphModule | None"]:
    """The source model as a function of a batch of input tensors returning its flat outputs, and its graph
    module (a torch.export source; None for TorchScript). A teacher that refuses batches (a static batch of one)
    is called a row at a time."""
    import torch
    from torch.utils._pytree import tree_leaves

    path = Path(str(path or ""))
    if path.is_file() and is_torch_export(path):
        program = load_program(path)
        module = program.module()

        def run(feeds: list["torch.Tensor"]) -> list["torch.Tensor"]:
            return [t for t in tree_leaves(call_program(program, module, feeds)) if isinstance(t, torch.Tensor)]
        return rows_if_needed(run), module
    if path.is_file() and is_torchscript(path):
        from hub_torch.describe import load_torchscript

        script = load_torchscript(path)
        script.eval()

        def run_script(feeds: list["torch.Tensor"]) -> list["torch.Tensor"]:
            return [t for t in tree_leaves(script(*feeds)) if isinstance(t, torch.Tensor)]
        return rows_if_needed(run_script), None
    raise UsageError(f"the distillation teacher {path} is not a torch.export or TorchScript file: distill from a "
                     "source saved with torch.export")


def rows_if_needed(run: Callable[[list["torch.Tensor"]], list["torch.Tensor"]]
                   ) -> Callable[[list["torch.Tensor"]], list["torch.Tensor"]]:
    """`run` on whole batches when the model takes them, else row by row (decided on the first batch)."""
    import torch

    state: dict[str, bool | None] = {"batched": None}

    def by_rows(feeds: list["torch.Tensor"]) -> list["torch.Tensor"]:
        per_row = [run([feed[row:row + 1] for feed in feeds]) for row in range(len(feeds[0]))]
        return [torch.cat([outputs[i] for outputs in per_row]) for i in range(len(per_row[0]))]

    def call(feeds: list["torch.Tensor"]) -> list["torch.Tensor"]:
        count = len(feeds[0])
        if state["batched"] is None and count > 1:
            try:
                outputs = run(feeds)
                state["batched"] = all(o.shape[:1] == (count,) for o in outputs)
                if state["batched"]:
                    return outputs
            except Exception:  # a static batch of one: shape guards or a baked-in reshape refuse the batch
                state["batched"] = False
        return run(feeds) if state["batched"] or count == 1 else by_rows(feeds)

    return call
