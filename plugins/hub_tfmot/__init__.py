"""tensorflow-model-optimization (tfmot): magnitude pruning of tf-keras models stored as HDF5 (format keras-h5,
declared by hub_tensorflow). tfmot prunes tf-keras models only (not Keras 3) and sets TF_USE_LEGACY_KERAS=1 when
imported; the step runs in its own worker, so that switch touches nothing else.

Declarations only; the step is in hub_tfmot.prune.
"""
from __future__ import annotations

from hub.declarations import Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

TFMOT = "tensorflow-model-optimization>=0.8"
TF_KERAS = "tf-keras>=2.16"
TENSORFLOW = "tensorflow>=2.16"
PRUNE_OPTIONS = (
    Option("sparsity", float, 0.5, "the fraction of each layer's weights set to zero", between=(0.0, 1.0)),
    Option("scope", str, "layer", "layer only: tfmot prunes each layer to the same sparsity"),
    Option("exempt_depthwise", bool, True, "leave depthwise convolutions dense"),
    Option("exempt_first_layer", bool, True, "leave the first layer dense"),
    Option("random_samples", int, 16, "seeded random samples used when there is no calibration"),
    Option("seed", int, 0, "seed of those random samples"),
)
PRUNE = Request("prune", "traits", "pruned", "sparsity",
                "global magnitude pruning to this fraction of zero weights (e.g. prune:0.5)")


@hookimpl
def hub_compressors() -> list[Step]:
    return [
        Step(
            name="tfmot-prune",
            min_cosine=0.8,
            accepts=Requirement.of(format="keras-h5", precision="fp32"),
            produces={"traits": "+pruned"},
            run="hub_tfmot.prune:prune_keras_h5",
            description="tfmot prune_low_magnitude, one shot to a constant sparsity per layer (Conv/Dense; first "
                        "and depthwise layers exempt by default), wrappers stripped, saved as HDF5",
            # about 8 s in fact (TensorFlow's import); priced below the ONNX pruning step (6 s) so that a Keras
            # source prunes in Keras, as a torch source prunes in torch, and a TFLite route can carry it
            seconds=5.0, seconds_per_mb=0.1, fidelity_loss=0.02, size_ratio=1.0,
            needs_calibration=True, options=PRUNE_OPTIONS, satisfies=(PRUNE,),
            requires=(TFMOT, TF_KERAS, TENSORFLOW), extra="tfmot",
        )
    ]
