"""Steps to a SavedModel: Keras 3 with model.export, tf-keras HDF5 with tf.saved_model.save."""
from __future__ import annotations

from pathlib import Path

from hub.declarations import StepContext
from hub_tensorflow.models import load_keras_h5_model, load_keras_model


def export_keras(ctx: StepContext) -> Path:
    """model.export writes a serving_default signature named after the model's inputs."""
    model = load_keras_model(ctx.input_path, ctx.options)
    output = ctx.workdir / "saved_model"
    model.export(str(output), format="tf_saved_model", verbose=False)
    ctx.notes["signature_inputs"] = [t.name for t in model.inputs]
    return output


def export_keras_h5(ctx: StepContext) -> Path:
    import tensorflow as tf

    model = load_keras_h5_model(ctx.input_path, ctx.options)
    output = ctx.workdir / "saved_model"
    # A signature over the model's own inputs keeps their names, which the verification samples use.
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    serve = tf.function(lambda *inputs: model(list(inputs) if len(inputs) > 1 else inputs[0], training=False),
                        input_signature=specs)
    tf.saved_model.save(model, str(output), signatures={"serving_default": serve.get_concrete_function()})
    ctx.notes["signature_inputs"] = [s.name for s in specs]
    return output
