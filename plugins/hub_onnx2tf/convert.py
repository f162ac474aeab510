"""The run function of the onnx2tf steps. onnx2tf, TensorFlow and onnx are imported inside functions only.

onnx2tf is run offline and contained: it would download a sample-image file for any 4-D, 3-channel input with a
fixed batch of at most 20 (even when given calibration data), so a file of that name is written into its working
folder first; it calls sys.exit(1) on errors, which becomes a StepFailedError carrying its last log lines; and
it rewrites its input .onnx, which is the step's private copy.
"""
from __future__ import annotations

import collections
import contextlib
import io
import itertools
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hub.declarations import StepContext
from hub.kit import working_directory
from hub.errors import MissingDependencyError, StepDeclinedError, StepFailedError, UsageError
from hub.states import CHANNELS_LAST_RANKS, TensorSpec

# onnx2tf reads this from its current directory before reaching for the internet (utils.common_functions).
SAMPLE_IMAGES_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLE_IMAGES_SHAPE = (20, 128, 128, 3)
# The file onnx2tf writes for each precision, after "<model name>_".
OUTPUT_SUFFIX = {
    "fp32": "float32.tflite",
    "fp16": "float16.tflite",
    "int8-dynamic": "dynamic_range_quant.tflite",
    "int8": "full_integer_quant.tflite",
}
# With 16-bit activations (TFLite's 16x8 mode): int16 inputs and outputs, or float32 ones.
INT16_ACTIVATIONS_SUFFIX = {"integer": "full_integer_quant_with_int16_act.tflite",
                            "float32": "integer_quant_with_int16_act.tflite"}
IO_DTYPES = ("int8", "uint8", "float32")
# _matched_shapes' choice for an output whose unit axes onnx2tf moved (the same array, reshaped)
UNIT_AXES_MOVED = -1
LOG_TAIL_LINES = 40
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# A character TensorFlow refuses in a scope name (tensorflow/python/framework/ops.py, _VALID_SCOPE_NAME_REGEX).
NOT_IN_TF_SCOPE_NAME = re.compile(r"[^A-Za-z0-9_./>-]")
# A Slice end at or beyond this keeps the rest of its axis whatever its size (exporters write INT_MAX or 1e9).
FULL_SLICE_END = 2**30


def convert_onnx_to_tflite(ctx: StepContext) -> Path:
    """ONNX fp32 -> one .tflite of ctx.options["precision"]; 4-D I/O channels-last unless options["keep_layout"]."""
    precision = str(ctx.options["precision"])
    keep_layout = bool(ctx.options.get("keep_layout", False))
    if precision not in OUTPUT_SUFFIX:
        raise UsageError(f"onnx2tf step option precision={precision!r} is not one of: {', '.join(OUTPUT_SUFFIX)}")
    onnx2tf = _import_onnx2tf()
    narrowed = _narrow_float64(ctx.input_path) if ctx.options.get("narrow_float64", True) else []
    inputs, outputs = _onnx_io(ctx.input_path)
    shapes = _concrete_shapes(inputs, ctx.inputs)
    tidied = _tidy_for_onnx2tf(ctx.input_path, shapes, fold=bool(ctx.options.get("fold_constants", True)))
    # after tidying: at the concrete shapes, with the branches of decided Ifs (an LSTM's, in Silero) inlined
    lowered = _lower_for_tflite(ctx.input_path, precision == "int8") if ctx.options.get("lower_for_tflite", True) \
        else []
    int8 = precision == "int8"
    io_dtype = str(ctx.options.get("io_dtype", "int8"))
    if int8 and io_dtype not in IO_DTYPES:
        raise UsageError(f"option io_dtype={io_dtype!r} is not one of: {', '.join(IO_DTYPES)}")
    if int(ctx.options.get("activation_bits", 8)) not in (8, 16):
        raise UsageError(f"option activation_bits={ctx.options['activation_bits']!r} is not 8 or 16")
    wide = int8 and int(ctx.options.get("activation_bits", 8)) == 16
    if not keep_layout:
        _refuse_channels_last_inputs(ctx.input_path, inputs)
    # 3-D, 4-D and 5-D inputs move channels-last (the core transposes its samples the same way) unless kept.
    kept = [spec.name for spec in inputs if keep_layout and len(spec.shape) in CHANNELS_LAST_RANKS]
    # A 3-D input whose first axis is no batch of one (an RNN state (layers, batch, hidden)) keeps its shape
    # absolutely: kept only "NCW", onnx2tf still moved Silero VAD's (2, 1, 128) state and handed its LSTM an
    # initial state of (128, 1) ("not compatible with cell.state_size").
    absolute = [name for name in kept if len(shapes[name]) == 3 and shapes[name][0] != 1]
    scratch = ctx.workdir / "onnx2tf"
    arrays = _calibration_arrays(ctx, inputs, shapes)
    # onnx2tf looks for its sample file in the current directory; the worker already runs in ctx.workdir, this
    # makes the step behave the same when called directly
    with working_directory(ctx.workdir):
        _write_sample_images(ctx.workdir / SAMPLE_IMAGES_FILE, inputs, arrays, int(ctx.options.get("seed", 0)))
        calibration = _calibration_files(ctx.workdir, inputs, arrays, kept, int8,
                                         int(ctx.options.get("max_calibration_samples", 200)))
        overwrite = [f"{spec.name}:{','.join(str(d) for d in shapes[spec.name])}"
                     for spec in inputs if None in spec.shape]
        options: dict[str, Any] = dict(
            input_onnx_file_path=str(ctx.input_path),
            output_folder_path=str(scratch),
            output_dynamic_range_quantized_tflite=precision == "int8-dynamic",
            output_integer_quantized_tflite=int8,
            quant_type=str(ctx.options.get("quant_type", "per-channel")),
            input_quant_dtype=io_dtype,
            output_quant_dtype=io_dtype,
            custom_input_op_name_np_data_path=calibration or None,
            keep_ncw_or_nchw_or_ncdhw_input_names=_with_onnx2tf_names(kept, int8) or None,
            keep_shape_absolutely_input_names=_with_onnx2tf_names(absolute, int8) or None,
            overwrite_input_shape=overwrite or None,
            non_verbose=False,
            verbosity="info",
        )
        log = _run_onnx2tf(onnx2tf, options)
    suffix = INT16_ACTIVATIONS_SUFFIX["float32" if io_dtype == "float32" else "integer"] if wide \
        else OUTPUT_SUFFIX[precision]
    produced = sorted(scratch.glob(f"*_{suffix}"))
    if not produced:
        raise StepFailedError(f"onnx2tf finished but wrote no *_{suffix} ({precision}); its last messages:\n"
                              + _log_tail(log), detail=log)
    output = ctx.workdir / f"model.{precision}.tflite"
    shutil.move(str(produced[0]), output)
    requantized = _requantize_io(output, scratch) if wide and io_dtype != "float32" else []
    shutil.rmtree(scratch, ignore_errors=True)
    for leftover in [ctx.workdir / SAMPLE_IMAGES_FILE, *(Path(entry[1]) for entry in calibration)]:
        leftover.unlink(missing_ok=True)
    io_details = _check_io(output, inputs, outputs, keep_layout, io_dtype if int8 else None)
    if int8 and ctx.options.get("full_integer", True):
        check_full_integer(output)
    ctx.notes.update(
        converter=f"onnx2tf {getattr(onnx2tf, '__version__', '?')}",
        file=produced[0].name,
        **({"activations": "int16 (16x8)", "io_requantized_from_int16": requantized} if wide else {}),
        layout="source" if keep_layout else "nhwc",
        kept_layout_inputs=kept,
        **({"shape_kept_absolutely": absolute} if absolute else {}),
        overwrite_input_shape=overwrite,
        calibration_samples=len(next(iter(arrays.values()))) if int8 and arrays else 0,
        calibration_source=(Path(ctx.calibration).name if ctx.calibration else "none") if int8 else None,
        float64_narrowed_to_float32=narrowed,
        **tidied,
        rewritten_for_tflite_builtins=lowered,
        **io_details,
    )
    return output


def _requantize_io(model: Path, scratch: Path) -> list[str]:
    """The 16x8 file's int16 inputs and outputs become those of the int8 file of the same run (its calibrated
    int8 scales), requantized to and from int16 inside the model."""
    from hub_litert.rewrite import requantize_io

    edges = sorted(scratch.glob(f"*_{OUTPUT_SUFFIX['int8']}"))
    if not edges:
        raise StepFailedError("onnx2tf wrote a 16-bit-activation model but no int8 one to take its int8 inputs "
                              "and outputs from")
    return requantize_io(model, edges[0])


def _import_onnx2tf() -> Any:
    try:
        import onnx2tf
    except ModuleNotFoundError as error:
        raise MissingDependencyError("onnx2tf or one of its dependencies is not installed: "
                                     "pip install 'conversion-hub[onnx2tf]'", detail=str(error)) from error
    return onnx2tf


def _narrow_float64(path: Path) -> list[str]:
    """Rewrite the step's private copy of a float64 model to compute in float32 (TFLite has no float64
    kernels: onnx2tf would write a file the interpreter cannot load); the names of the tensors changed."""
    from hub_onnx.model_file import load_model, save_model
    from hub_onnx.narrowing import computes_in_float64, float64_as_float32

    model = load_model(path)
    if not computes_in_float64(model):
        return []
    changed = float64_as_float32(model)
    save_model(model, path)
    return changed


def _tidy_for_onnx2tf(path: Path, shapes: dict[str, tuple[int, ...]], fold: bool) -> dict[str, int]:
    """Rewrite the step's private copy into what onnx2tf handles; the number of nodes or tensors each part changed.

    - constants folded: constant and shape subgraphs folded at the concrete input shapes. onnx2tf expects its
      input simplified by onnxsim, which it runs only when an `onnxsim` command is on the PATH, and converts
      computed pads, shapes and reshape targets wrongly otherwise (the Pad subgraphs of a TorchScript-exported
      EfficientNet padded the batch axis: logits of shape (10, 1000) for (1, 1000)).
    - dimensions made unknown: declared dimensions of -1 (paddle2onnx writes them for dynamic axes) become
      unknown, as ONNX means them; onnx2tf takes them literally ("Dimension -1 must be >= 0").
    - slices made plain: a Slice lists only the axes it cuts, in ascending order, and one that cuts none becomes an
      Identity. onnx2tf maps a Slice's axes to channels-last but not always its bounds: tf2onnx's Conv1D (a
      Conv2D, then a Slice to width 1 over its unit axis 3) came out as a slice to one channel (Magika's logits
      at cosine 0.001), and Basic Pitch's slice of axes [0, 2, 1, 3] cut the wrong axis ("Dimensions must be
      equal, but are 324 and 309").
    - nodes renamed: node names become valid TF scope names (paddle2onnx names nodes "Softmax@0"; onnx2tf names
      its layers after the nodes and TF refuses them). Tensor names, and so the model's I/O names, are kept.
    """
    import onnx_graphsurgeon as gs

    from hub_onnx.model_file import load_model, save_model

    model = load_model(path)
    graph = gs.import_onnx(model)
    for tensor in graph.inputs:
        if tensor.name in shapes:
            tensor.shape = list(shapes[tensor.name])
    before = len(graph.nodes)
    if fold:
        graph = _folded_at_concrete_shapes(graph)
    changed = {"constant_nodes_folded": before - len(graph.nodes),
               "dimensions_made_unknown": _negative_dims_unknown(graph),
               "slices_made_plain": _plain_slices(graph),
               "nodes_renamed_for_tf": _tf_scope_node_names(graph)}
    if any(changed.values()):
        if changed["constant_nodes_folded"]:
            _forget_inner_shapes(graph)
        tidied = gs.export_onnx(graph)
        tidied.ir_version, tidied.producer_name = model.ir_version, model.producer_name
        tidied.metadata_props.extend(model.metadata_props)
        save_model(_with_inferred_shapes(tidied) if changed["constant_nodes_folded"] else tidied, path)
    return changed


def _folded_at_concrete_shapes(graph: Any, rounds: int = 8) -> Any:
    """Fold constant and shape subgraphs, inferring shapes again at the concrete input shapes between rounds
    until nothing more folds: a shape is known only once the Reshape before it is folded (PP-OCR's recognizer
    reshapes through Shape -> Slice -> Concat six times, one more per round; left computed, onnx2tf read the
    shapes of its channels-last tensors and flattened (1, 40, 120) to (1, 1, 4800))."""
    import onnx_graphsurgeon as gs

    for _ in range(rounds):
        count = len(graph.nodes)
        _forget_inner_shapes(graph)
        graph = gs.import_onnx(_with_inferred_shapes(gs.export_onnx(graph)))
        _integers_times_zero_as_constants(graph)
        # graphsurgeon's own flattening of decided Ifs loses outputs of nested ones (below)
        graph.fold_constants(fold_shapes=True, flatten_subgraphs=False).cleanup()
        if _inline_decided_ifs(graph):
            graph.cleanup().toposort()
        elif len(graph.nodes) == count:
            break
    return graph


def _integers_times_zero_as_constants(graph: Any) -> None:
    """An integer tensor of known shape multiplied by a constant zero becomes the constant zero it is, so that
    what follows folds. Exporters keep an otherwise unused input in the graph that way: Silero VAD adds
    Cast(sr * 0) to its state, and the cast of the int64 sample rate stayed the one float operator in its
    int8 model."""
    import onnx_graphsurgeon as gs

    for node in graph.nodes:
        if node.op != "Mul" or len(node.inputs) != 2:
            continue
        for index in (0, 1):
            tensor, other = node.inputs[index], node.inputs[1 - index]
            known = isinstance(tensor, gs.Variable) and tensor.dtype is not None and tensor.shape is not None \
                and all(isinstance(d, int) for d in tensor.shape)
            if known and np.dtype(tensor.dtype).kind in "iu" and isinstance(other, gs.Constant) \
                    and not np.any(other.values):
                node.inputs[index] = gs.Constant(f"{tensor.name}/times_zero", np.zeros(tensor.shape, tensor.dtype))
                break


def _inline_decided_ifs(graph: Any) -> int:
    """Replace each If whose condition has folded to a constant by the nodes of the branch it takes, its
    outputs by Identity nodes of the branch's; returns how many. Exporters guard squeezes and state handling
    with Ifs on shapes (Silero VAD has eleven, nested, all on dimensions that the concrete shapes decide).
    graphsurgeon 0.5's fold_constants flattens such Ifs itself, but rebinds the outputs of nested ones wrongly:
    Silero's second LSTM state lost its producer, and onnx2tf (which folds the same way) failed with
    "KeyError: '/model/decoder/rnn/If_1_output_1_subg_96_sub_graph2'". Identity nodes rebind them here."""
    import onnx_graphsurgeon as gs

    inlined = 0
    for node in list(graph.nodes):
        if node.op != "If" or not isinstance(node.inputs[0], gs.Constant):
            continue
        taken = bool(np.asarray(node.inputs[0].values).reshape(-1)[0])
        branch = node.attrs["then_branch" if taken else "else_branch"]
        outputs = list(node.outputs)
        node.outputs.clear()
        graph.nodes.extend(branch.nodes)
        # a branch output may be the If's output itself (the same name: one tensor here), already produced
        graph.nodes.extend(gs.Node("Identity", name=f"{node.name}/{'then' if taken else 'else'}/{index}",
                                   inputs=[inner], outputs=[outer])
                           for index, (inner, outer) in enumerate(zip(branch.outputs, outputs)) if inner is not outer)
        inlined += 1
    return inlined


def _forget_inner_shapes(graph: Any) -> None:
    """Drop the shapes recorded for inner tensors: they were inferred at the dynamic input shapes, and onnx2tf
    trusts them (a YOLOv8 head kept a batch of "?" beside 1 and failed to add them); ONNX's shape inference
    fills them in again at the concrete ones."""
    ends = {tensor.name for tensor in graph.inputs + graph.outputs}
    for name, tensor in graph.tensors().items():
        if name not in ends and not hasattr(tensor, "values"):  # a Variable, not a Constant
            tensor.shape = None


def _with_inferred_shapes(model: Any) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a help to onnx2tf, not a need: custom domains and large models refuse it
        return model


def _negative_dims_unknown(graph: Any) -> int:
    changed = 0
    for tensor in graph.tensors().values():
        shape = getattr(tensor, "shape", None)
        if shape and any(isinstance(d, int) and d < 0 for d in shape):
            tensor.shape = [None if isinstance(d, int) and d < 0 else d for d in shape]
            changed += 1
    return changed


def _plain_slices(graph: Any) -> int:
    """Rewrite each Slice with constant bounds to list only the axes it cuts, by ascending axis (an Identity
    where it cuts none); how many changed (see _tidy_for_onnx2tf)."""
    import onnx_graphsurgeon as gs

    changed = 0
    for node in graph.nodes:
        listed = _listed_cuts(node, gs.Constant) if node.op == "Slice" else None
        if listed is None:
            continue
        cuts = _real_cuts(listed, node.inputs[0].shape)
        if cuts == listed:
            continue
        while len(node.inputs) > 1:  # graphsurgeon's synchronised list: pop keeps the tensors' links right
            node.inputs.pop()
        if cuts:
            axes, starts, ends, steps = zip(*cuts)
            node.inputs.extend(gs.Constant(f"{node.name}/plain_{part}", np.asarray(values, np.int64))
                               for part, values in (("starts", starts), ("ends", ends), ("axes", axes),
                                                    ("steps", steps)))
        else:
            node.op, node.attrs = "Identity", {}
        changed += 1
    return changed


def _listed_cuts(node: Any, constant: type) -> list[tuple[int, int, int, int]] | None:
    """A Slice's (axis, start, end, step) in the order it lists them (opset 10 and up: bounds as inputs); None
    where its bounds are computed or its input's rank is unknown."""
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    bounds = node.inputs[1:]
    if rank is None or len(bounds) < 2 or not all(isinstance(b, constant) for b in bounds):
        return None  # before opset 10 the bounds are attributes: left as they are
    starts, ends, *rest = (np.asarray(b.values).reshape(-1).tolist() for b in bounds)
    axes = [axis % rank for axis in rest[0]] if rest else list(range(len(starts)))
    steps = rest[1] if len(rest) > 1 else [1] * len(starts)
    return list(zip(axes, starts, ends, steps))


def _real_cuts(listed: list[tuple[int, int, int, int]], shape: list) -> list[tuple[int, int, int, int]]:
    """The entries that cut something, by ascending axis."""
    cuts = []
    for axis, start, end, step in sorted(listed):
        size = shape[axis]
        whole_end = end >= FULL_SLICE_END or (isinstance(size, int) and (end + size if end < 0 else end) >= size)
        if not (step == 1 and start == 0 and whole_end):
            cuts.append((axis, start, end, step))
    return cuts


def _tf_scope_node_names(graph: Any) -> int:
    taken = {node.name for node in graph.nodes}
    changed = 0
    for node in graph.nodes:
        if node.name and NOT_IN_TF_SCOPE_NAME.search(node.name):
            name = base = NOT_IN_TF_SCOPE_NAME.sub("_", node.name)
            suffix = itertools.count(1)
            while name in taken:
                name = f"{base}_{next(suffix)}"
            taken.add(name)
            node.name = name
            changed += 1
    return changed


def _lower_for_tflite(path: Path, integer: bool) -> list[str]:
    """Rewrite the step's private copy where onnx2tf would emit operators TFLite has only as Flex ops or TF
    cannot run (hub_onnx2tf.lowering); the nodes rewritten."""
    import onnx

    from hub_onnx.model_file import load_model, save_model
    from hub_onnx2tf.lowering import lower_for_tflite

    model = load_model(path)
    try:
        rewritten = lower_for_tflite(model, integer)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise StepFailedError(f"rewriting operators for TFLite builtins made an invalid model: {error}") from error
    if rewritten:
        save_model(model, path)
    return rewritten


def _refuse_channels_last_inputs(path: Path, inputs: tuple[TensorSpec, ...]) -> None:
    """Moving channels last assumes channels-first inputs. A graph tf2onnx made from TensorFlow or TFLite keeps
    TensorFlow's channels-last inputs (as does one whose inputs each go straight into a Transpose to channels
    first): onnx2tf would give a (1, 224, 224, 3) image input the shape (1, 224, 3, 224). The step fails at once,
    and the route that keeps the inputs' layout (onnx2tf-nchw) is the one to take."""
    from hub_onnx.model_file import load_model

    model = load_model(path, with_weights=False)
    ranked = [spec for spec in inputs if len(spec.shape) in CHANNELS_LAST_RANKS]
    from_tensorflow = model.producer_name == "tf2onnx"
    channels_last = [spec.name for spec in ranked if from_tensorflow or _transposed_first(model, spec)]
    if channels_last:
        origin = ("a graph tf2onnx made from TensorFlow" if from_tensorflow
                  else "each goes into a Transpose to channels-first")
        raise StepDeclinedError(
            f"input(s) {', '.join(channels_last)} are channels-last already ({origin}): moving their channels "
            "last again would scramble them; the onnx2tf-nchw route keeps them as they are")


def _transposed_first(model: Any, spec: TensorSpec) -> bool:
    """Whether every consumer of the input is a Transpose moving its last axis to axis 1."""
    rank = len(spec.shape)
    to_channels_first = [0, rank - 1, *range(1, rank - 1)]
    consumers = [node for node in model.graph.node if spec.name in node.input]
    return bool(consumers) and all(node.op_type == "Transpose" and _perm(node) == to_channels_first
                                   for node in consumers)


def _perm(node: Any) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _onnx_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    from hub_onnx.model_file import graph_inputs, load_model, tensor_spec

    model = load_model(path, with_weights=False)
    return graph_inputs(model), tuple(tensor_spec(v) for v in model.graph.output)


def _concrete_shapes(inputs: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...]) -> dict[str, tuple[int, ...]]:
    """Fixed shapes for onnx2tf: the graph's, with dynamic dimensions taken from the hub's input specs (matched by
    name, else by position), else 1."""
    by_name = {spec.name: spec for spec in given}
    shapes = {}
    for index, spec in enumerate(inputs):
        other = by_name.get(spec.name) or (given[index] if len(given) == len(inputs) else None)
        hint = other.shape if other is not None and len(other.shape) == len(spec.shape) else (None,) * len(spec.shape)
        shapes[spec.name] = tuple(d if d is not None else (h if h is not None else 1) for d, h in zip(spec.shape, hint))
    return shapes


def _calibration_arrays(ctx: StepContext, inputs: tuple[TensorSpec, ...],
                        shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The calibration samples per ONNX input, in the source's layout (samples along axis 0), or {} if none."""
    if ctx.calibration is None:
        return {}
    with np.load(ctx.calibration, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if len(arrays) == 1 and len(inputs) == 1:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    elif not all(spec.name in arrays for spec in inputs) and len(arrays) == len(inputs):
        arrays = dict(zip((spec.name for spec in inputs), arrays.values()))  # same order, other names
    missing = [spec.name for spec in inputs if spec.name not in arrays]
    if missing:
        raise UsageError(f"the calibration data has no array for input(s) {', '.join(missing)}; "
                         f"it holds {', '.join(sorted(arrays)) or 'nothing'}")
    return {spec.name: _batch_first(np.asarray(arrays[spec.name]), spec.name, shapes[spec.name]) for spec in inputs}


def _batch_first(array: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Samples along axis 0, each of shape[1:]: onnx2tf calibrates with slices of axis 0 as batches. Whole
    inputs stacked along a new axis (an input whose first axis is no batch of one, e.g. an RNN state (2, 1, 128))
    cannot be fed that way."""
    if array.shape[1:] == shape[1:]:
        return array
    if array.shape[1:] == shape:
        if shape[0] == 1:
            return array.reshape(len(array), *shape[1:])
        # declined, not failed: a float conversion then ai-edge-quantizer, which calibrates whole inputs, can
        raise StepDeclinedError(f"onnx2tf calibrates with batches along an input's first axis; input {name} has "
                                f"shape {shape}, whose first axis is no batch of one (a float or dynamic-range "
                                "target converts it without calibration)")
    raise UsageError(f"calibration samples for {name} have shape {array.shape[1:]} per sample; the model takes "
                     f"{shape[1:]}")


def _calibration_files(folder: Path, inputs: tuple[TensorSpec, ...], arrays: dict[str, np.ndarray],
                       kept: list[str], int8: bool, limit: int) -> list[list[Any]]:
    """custom_input_op_name_np_data_path entries: one float32 .npy per input in the layout the TFLite model will
    take (NHWC unless kept), with mean 0 and std 1 since the samples are already what the model is fed.

    Given for every precision when samples exist: onnx2tf also runs them through ONNX Runtime to settle shapes,
    which is better than its default of ones or photos."""
    if not arrays or any(np.dtype(spec.dtype).kind != "f" for spec in inputs):
        if int8 and arrays:
            # declined, not a usage error: the model is fine, and a float conversion then ai-edge-quantizer
            # (which calibrates any input type) is another route
            other = next(spec for spec in inputs if np.dtype(spec.dtype).kind != "f")
            raise StepDeclinedError(f"onnx2tf calibrates float inputs only; input {other.name} is {other.dtype}")
        return []
    entries = []
    for index, spec in enumerate(inputs):
        array = arrays[spec.name][:limit].astype(np.float32)
        if array.ndim in CHANNELS_LAST_RANKS and spec.name not in kept:
            array = array.transpose(0, *range(2, array.ndim), 1)
        path = folder / f"calibration_{index}.npy"
        np.save(path, np.ascontiguousarray(array))
        entries.append([_onnx2tf_name(spec.name, int8), str(path), np.float32(0.0), np.float32(1.0)])
    return entries


def _write_sample_images(path: Path, inputs: tuple[TensorSpec, ...], arrays: dict[str, np.ndarray],
                         seed: int) -> None:
    """The 20x128x128x3 float32 file onnx2tf would otherwise download: our own samples when an input is a 3-channel
    image (nearest-neighbour resized, repeated to 20), else seeded uniform noise in [0, 1)."""
    images = next((arrays[spec.name] for spec in inputs
                   if spec.name in arrays and arrays[spec.name].ndim == 4 and arrays[spec.name].shape[1] == 3), None)
    if images is None or len(images) == 0:
        data = np.random.default_rng(seed).random(SAMPLE_IMAGES_SHAPE, dtype=np.float32)
    else:
        count, _, height, width = images.shape
        rows = np.arange(128) * height // 128
        columns = np.arange(128) * width // 128
        nhwc = images.astype(np.float32).transpose(0, 2, 3, 1)[:, rows][:, :, columns]
        data = nhwc[np.arange(SAMPLE_IMAGES_SHAPE[0]) % count]
    np.save(path, np.ascontiguousarray(data, dtype=np.float32))


def _onnx2tf_name(name: str, int8: bool) -> str:
    """The name onnx2tf gives an input: ':' becomes '__', and for int8 a leading '/' becomes 'wa/'."""
    name = name.replace(":", "__")
    return re.sub("^/", "wa/", name) if int8 else name


def _with_onnx2tf_names(names: list[str], int8: bool) -> list[str]:
    return list(dict.fromkeys([*names, *(_onnx2tf_name(n, int8) for n in names)]))


class _TailWriter(io.TextIOBase):
    """Passes text through to a stream and keeps its last lines (and all of it, for the error detail)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        self.lines.extend(ANSI_ESCAPE.sub("", line) for line in complete if line.strip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "\n".join([*self.lines, ANSI_ESCAPE.sub("", self._partial)]).strip()


def _run_onnx2tf(onnx2tf: Any, options: dict[str, Any]) -> str:
    """onnx2tf.convert(**options); its sys.exit and exceptions become StepFailedError with its last messages."""
    writer = _TailWriter(sys.stdout)
    try:
        with contextlib.redirect_stdout(writer):  # onnx2tf logs with print()
            onnx2tf.convert(**options)
    except SystemExit as exit_:
        log = writer.text()
        raise StepFailedError(f"onnx2tf stopped (exit status {exit_.code}); its last messages:\n" + _log_tail(log),
                              detail=log) from None
    except Exception as error:
        log = writer.text()
        raise StepFailedError(_failure_summary(error, Path(options["input_onnx_file_path"])),
                              detail=f"{type(error).__name__}: {error}\n{log}") from error
    return writer.text()


# Lines of a Keras traceback that say where, not what.
TRACEBACK_LINE = re.compile(r"^(File |raise |lambda |return |Call arguments|in user code:|•|\S+Error: Exception "
                            r"encountered|Exception encountered)")


def _failure_summary(error: Exception, model: Path) -> str:
    """One line: the TF error's own reason (not Keras's "in user code:" or "Exception encountered when calling
    layer"), and the ONNX node onnx2tf was converting (it names TF layers after the nodes) with its operator."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if not TRACEBACK_LINE.match(line)), lines[0] if lines else "")
    reason = re.sub(r" for '\{\{node [^']*'", "", reason)
    node = re.search(r"name='([^']+)'", str(error))
    where = f" at ONNX node {node.group(1)}{_operator_of(model, node.group(1))}" if node else ""
    return f"onnx2tf failed{where}: {type(error).__name__}: {reason}"


def _operator_of(model: Path, node_name: str) -> str:
    from hub_onnx.model_file import iter_nodes, load_model

    try:
        graph = load_model(model, with_weights=False)
    except Exception:  # the summary does without it: onnx2tf may have left its input half-rewritten
        return ""
    return next((f" ({node.op_type})" for node in iter_nodes(graph) if node.name == node_name), "")


def _log_tail(log: str) -> str:
    lines = log.splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR" in line or "Error" in line or "failed" in line]
    start = max(0, errors[0] - 2) if errors else len(lines) - LOG_TAIL_LINES
    return "\n".join(lines[max(start, len(lines) - LOG_TAIL_LINES):])


def check_full_integer(model: Path) -> None:
    """Fail when an operator of the model still computes in float (onnx2tf lets SELECT_TF_OPS keep some), naming
    them. The check is the TFLite plugin's, shared with its own converters."""
    from hub_litert.interpreter import float_operators

    stayed_float = float_operators(model)
    if stayed_float:
        raise StepFailedError(f"onnx2tf could not make the model fully integer: {len(stayed_float)} operator(s) "
                              "stayed float: " + "; ".join(stayed_float))


def _check_io(model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], keep_layout: bool,
              io_dtype: str | None) -> dict[str, Any]:
    """Check the TFLite model's I/O shapes (and, for int8, their types) against what the step declares.

    onnx2tf keeps NCHW inputs on request but has no option for outputs: a 4-D output comes out channels-last
    whatever is asked. A step that declared layout "source" would then be verified against transposed outputs,
    so it fails here with the reason instead. Without keep_layout, an output onnx2tf left in the source's layout
    (it does so with 3-D outputs of a graph that already computes channels-last, as tf2onnx writes from a TFLite
    model) is accepted and named; verification moves back only the outputs that were moved."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    tfl_inputs, tfl_outputs = interpreter.get_input_details(), interpreter.get_output_details()
    expected_inputs = [[_expected_shape(spec.shape, keep_layout)] for spec in inputs]
    expected_outputs = [list(dict.fromkeys([_expected_shape(spec.shape, keep_layout), spec.shape]))
                        for spec in outputs]
    got_inputs = [tuple(int(d) for d in detail["shape"]) for detail in tfl_inputs]
    got_outputs = [tuple(int(d) for d in detail["shape"]) for detail in tfl_outputs]
    output_choices = _matched_shapes(expected_outputs, got_outputs)
    if output_choices is None or _matched_shapes(expected_inputs, got_inputs) is None:
        layout = "source's layout" if keep_layout else "channels-last tensors"
        raise StepFailedError(
            f"onnx2tf wrote inputs {got_inputs} and outputs {got_outputs}, not the {layout} this step promises "
            f"(expected inputs {[e[0] for e in expected_inputs]}, outputs {[e[0] for e in expected_outputs]})"
            + ("; onnx2tf cannot keep 4-D or 3-D outputs channels-first: use the channels-last variant"
               if keep_layout and any(len(spec.shape) in (3, 4, 5) for spec in outputs) else ""))
    dtypes: dict[str, Any] = {"input_dtypes": [np.dtype(d["dtype"]).name for d in tfl_inputs],
                              "output_dtypes": [np.dtype(d["dtype"]).name for d in tfl_outputs]}
    if io_dtype is not None and set(dtypes["input_dtypes"] + dtypes["output_dtypes"]) != {io_dtype}:
        raise StepFailedError(f"onnx2tf's full-integer model does not have {io_dtype} inputs and outputs: {dtypes}")
    left = [spec.name for spec, choice in zip(outputs, output_choices) if choice == 1]
    reshaped = [spec.name for spec, choice in zip(outputs, output_choices) if choice == UNIT_AXES_MOVED]
    return {**dtypes, **({"outputs_left_in_source_layout": left} if left else {}),
            **({"outputs_with_unit_axes_moved": reshaped} if reshaped else {})}


def _expected_shape(shape: tuple[int | None, ...], source_layout: bool) -> tuple[int | None, ...]:
    if source_layout or len(shape) not in CHANNELS_LAST_RANKS:
        return shape
    return (shape[0], *shape[2:], shape[1])


def _matched_shapes(expected: list[list[tuple[int | None, ...]]], got: list[tuple[int, ...]]) -> list[int] | None:
    """For each tensor, which of its acceptable shapes (the first preferred) the TFLite model has, matched as
    multisets where dimensions are known (the TFLite output order may differ from ONNX's); None if none fits.
    Failing those, a shape whose axes longer than one are the same, in the same order, is the same array with
    its unit axes moved (Silero's (2, 1, 128) state came out (1, 2, 128)): verification reshapes it."""
    if len(expected) != len(got):
        return None
    remaining, chosen = list(got), []
    for alternatives in expected:
        fits = [(choice, g) for choice, shape in enumerate(alternatives) for g in remaining
                if len(g) == len(shape) and all(e is None or e == d for e, d in zip(shape, g))]
        fits = fits or [(UNIT_AXES_MOVED, g) for g in remaining if _long_axes(alternatives[-1]) == _long_axes(g)]
        if not fits:
            return None
        choice, match = fits[0]
        remaining.remove(match)
        chosen.append(choice)
    return chosen


def _long_axes(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """The known dimensions longer than one, in order (an unknown one may be a batch of one)."""
    return tuple(d for d in shape if d is not None and d != 1)
