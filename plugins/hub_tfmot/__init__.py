"""tensorflow-model-optimization (tfmot): magnitude pruning of tf-keras models stored as HDF5 (format keras-h5,
declared by hub_tensorflow). tfmot prunes tf-keras models only (not Keras 3) and sets TF_USE_LEGACY_KERAS=1 when
imported; the step runs in its own worker, so that switch touches nothing else.

Declarations only; the step is in hub_tfmot.prune.
"""
from __future__ import annotations

from hub.declarations import Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

TFMOT = "tensorflow-model-optimization>=0.8"
TF_KERAS = "tf-keras>=2.16"
TENSORFLOW = "tensorflow>=2.16"
PRUNE_OPTIONS = {"sparsity": 0.5, "scope": "layer", "exempt_depthwise": True, "exempt_first_layer": True,
                 "random_samples": 16, "seed": 0}


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
            needs_calibration=True, options=PRUNE_OPTIONS,
            requires=(TFMOT, TF_KERAS, TENSORFLOW), extra="tfmot",
        )
    ]
