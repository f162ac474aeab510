"""4-bit weight-only quantization with ONNX Runtime's MatMulNBits quantizer: each MatMul whose B input is a
constant becomes a MatMulNBits node holding 4-bit weights in blocks along K, one scale per block (symmetric:
no zero point). Activations stay float32. Gemm nodes with constant weights are first rewritten as MatMul + Add
so that linear layers exported as Gemm are quantized too.

The embedding table of a Gather stays float32 unless `quantize_gather` is set (ONNX Runtime then quantizes it
along axis 0 into GatherBlockQuantized): on transformer models that table is often the largest tensor.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.declarations import StepContext
from hub.errors import StepFailedError, UsageError
from hub_onnx.model_file import iter_nodes, load_model, save_model

if TYPE_CHECKING:
    import onnx

INT4_DEFAULTS = {"block_size": 32, "symmetric": True, "accuracy_level": None, "gemm_to_matmul": True,
                 "quantize_gather": False}
BLOCK_SIZES = (16, 32, 64, 128, 256)


def run_int4_weights(ctx: StepContext) -> Path:
    """onnx fp32 -> int4: MatMulNBits (4-bit blocked weights) for every MatMul with constant weights."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    options = {**INT4_DEFAULTS, **ctx.options}
    block_size = int(options["block_size"])
    if block_size not in BLOCK_SIZES:
        raise UsageError(f"option block_size={block_size} is not one of: {', '.join(map(str, BLOCK_SIZES))}")
    model = load_model(ctx.input_path)
    rewritten = gemm_to_matmul(model) if options["gemm_to_matmul"] else 0
    op_types: tuple[str, ...] = ("MatMul", "Gather") if options["quantize_gather"] else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=block_size, is_symmetric=bool(options["symmetric"]),
        accuracy_level=None if options["accuracy_level"] is None else int(options["accuracy_level"]),
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)) if options["quantize_gather"] else None,
    )
    quantizer.process()
    quantized = quantizer.model.model
    counts = Counter(node.op_type for node in iter_nodes(quantized))
    if not counts.get("MatMulNBits"):
        raise StepFailedError("no MatMul with constant weights to quantize to 4 bits: int4 weight-only "
                              "quantization suits MatMul-heavy models (transformers, MLPs), not convolutions")
    output = save_model(quantized, ctx.workdir / "model.int4.onnx")
    ctx.notes.update(quantizer="onnxruntime MatMulNBitsQuantizer", bits=4, block_size=block_size,
                     symmetric=bool(options["symmetric"]), accuracy_level=options["accuracy_level"],
                     gemm_rewritten_as_matmul=rewritten, matmul_nbits=counts["MatMulNBits"],
                     matmul_left_float=counts.get("MatMul", 0),
                     gather_quantized=counts.get("GatherBlockQuantized", 0),
                     embedding_gathers_left_float=_float_gathers(quantized))
    if counts.get("Gather") and not options["quantize_gather"]:
        ctx.notes["gather"] = ("Gather (embedding) tables stay float32; set option quantize_gather to quantize "
                               "them to 4 bits too")
    return output


def gemm_to_matmul(model: "onnx.ModelProto") -> int:
    """Rewrite Gemm(A, B const, C) with alpha = beta = 1 and no transA as MatMul(A, B') [+ Add C], B' = Bᵀ when
    transB: the quantizer handles MatMul only. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    # a weight shared with another node keeps its layout there: such a Gemm stays as it is
    users = Counter(name for node in model.graph.node for name in node.input)
    rewritten = 0
    new_nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in initializers
                or users[node.input[1]] > 1 or attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0
                or attributes.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        weight = initializers[node.input[1]]
        if attributes.get("transB", 0):
            transposed = numpy_helper.to_array(weight).T.copy()
            weight.CopyFrom(numpy_helper.from_array(transposed, weight.name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [product],
                                          name=(node.name or node.output[0]) + "_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                              name=(node.name or node.output[0]) + "_Add"))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return rewritten


def _float_gathers(model: Any) -> int:
    initializers = {t.name for t in model.graph.initializer}
    return sum(1 for node in model.graph.node if node.op_type == "Gather" and node.input[0] in initializers)
