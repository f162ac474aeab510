"""The options of the torch compressors and the compression requests they satisfy, declared once: the steps in
hub_torch/__init__.py carry them, and prune.py / distill.py fall back on their defaults when called directly."""
from __future__ import annotations

from hub.declarations import Option, Request, defaults_of

FRACTION = (0.0, 1.0)


def _exemptions(by_default: bool) -> tuple[Option, ...]:
    return (
        Option("exempt_depthwise", bool, by_default, "leave depthwise convolutions dense (one small filter per "
               "channel: pruning them removes whole features)"),
        Option("exempt_first_layer", bool, by_default, "leave the first layer dense (few weights, every later "
               "feature depends on it)"),
    )


PRUNE_OPTIONS = (
    Option("sparsity", float, 0.5, "the fraction of prunable weights set to zero", between=FRACTION),
    Option("scope", str, "global", "global: one magnitude threshold over all layers; layer: one per layer"),
    *_exemptions(True),
)
CLIP_OPTIONS = (
    Option("threshold", float, 1e-3, "weights whose magnitude is below this become zero"),
    *_exemptions(False),
)
# Widths in multiples of 8 keep the convolution kernels' SIMD blocks full: measured on EfficientNet-Lite0, odd
# widths made the 30%-pruned model slower than the unpruned one under ONNX Runtime.
CHANNEL_OPTIONS = (
    Option("sparsity", float, 0.3, "the fraction of channels removed", between=FRACTION),
    Option("round_to", int, 8, "keep channel counts multiples of this (1: any count)"),
    Option("exempt_output_layers", bool, True, "never remove the output layers' channels"),
)
DISTILL_OPTIONS = (
    Option("samples", str, None, "an .npz of unlabelled inputs (keyed by input name) to train on", path=True),
    Option("steps", int, 300, "optimizer steps: the bound on the work done"),
    Option("max_seconds", float, 600.0, "the bound on the wall time: training stops at whichever comes first"),
    Option("batch", int, 16, "samples per optimizer step"),
    Option("lr", float, 3e-4, "peak AdamW learning rate (warm-up, then cosine decay over the steps or seconds)"),
    Option("warmup_steps", int, 10, "steps of linear learning-rate warm-up"),
    Option("temperature", float, 4.0, "softening of the class scores in the KL term"),
    Option("kl_weight", float, 1.0, "weight of KL(teacher || student) on softened class scores (2-D outputs)"),
    Option("mse_weight", float, 1.0, "weight of the MSE on the raw outputs (every output)"),
    Option("feature_weight", float, 20.0, "weight of the MSE on what the pruned layers see, relative to the "
           "teacher's (0: outputs only)"),
    Option("holdout_fraction", float, 0.2, "samples kept out of training to report fidelity before and after"),
    Option("augment", bool, True, "random crops and flips of image inputs (one NCHW input), labelled by the teacher"),
    Option("min_crop", float, 0.5, "the smallest crop side, as a fraction of the image side"),
    Option("seed", int, 0, "seed of the sample order, crops and flips"),
    Option("quantization_aware", bool, True, "train at int8-rounded weights when the route goes on to int8"),
    Option("quantization_aware_from", float, 0.5, "from this fraction of the training on (0: from the start)"),
    # A small model's operators are too short to share between threads: on 2 busy cores a 10k-weight CNN trained
    # 4x faster on one thread than on torch's default of one per core.
    Option("threads", int, 0, "torch threads for the training (0: torch's default, one per core)"),
)
PRUNE_DEFAULTS = defaults_of(PRUNE_OPTIONS)
CLIP_DEFAULTS = defaults_of(CLIP_OPTIONS)
CHANNEL_DEFAULTS = defaults_of(CHANNEL_OPTIONS)
DISTILL_DEFAULTS = defaults_of(DISTILL_OPTIONS)

PRUNE = Request("prune", "traits", "pruned", "sparsity",
                "global magnitude pruning to this fraction of zero weights (e.g. prune:0.5)")
CLIP = Request("clip", "traits", "clipped", "threshold", "zero every weight whose magnitude is below this value")
PRUNE_CHANNELS = Request("prune-channels", "traits", "channels-pruned", "sparsity",
                         "structured pruning: remove this fraction of channels (e.g. prune-channels:0.3)")
DISTILL = Request("distill", "traits", "distilled", "samples",
                  "train the compressed model on the source's outputs for these unlabelled samples (an .npz)")
