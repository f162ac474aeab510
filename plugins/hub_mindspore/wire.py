"""Our description of the MindIR wire format and the protobuf message classes built from it.

MindIR is a proto2 protobuf close to ONNX's. The field numbers and types below are facts of the format, as
MindSpore 2.x writes and reads it; they are described here in our own table (no schema file is copied) and
turned into message classes at import time with the descriptor API, so any protobuf >= 4 works and the classes
never clash with MindSpore's own. Messages we never read (parallel layouts, preprocessors, map tensors, scalar
graph holders) are left out: protobuf keeps their bytes as unknown fields, so a file read and written again
loses nothing. Enum-typed fields are plain int32 here; their values are the constants below.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

PACKAGE = "hub_mindir"

# message name -> (field number, field name, type, repeated); a capitalised type names another message
MESSAGES: dict[str, list[tuple[int, str, str, bool]]] = {
    "AttributeProto": [
        (1, "name", "string", False), (2, "f", "float", False), (3, "i", "int64", False),
        (4, "d", "double", False), (5, "s", "bytes", False), (6, "t", "TensorProto", False),
        (7, "g", "GraphProto", False), (8, "floats", "float", True), (9, "doubles", "double", True),
        (10, "ints", "int64", True), (11, "strings", "bytes", True), (12, "tensors", "TensorProto", True),
        (13, "graphs", "GraphProto", True), (14, "doc_string", "string", False),
        (15, "ref_attr_name", "string", False), (16, "type", "int32", False),
        (17, "values", "AttributeProto", True), (18, "seq_info", "SeqInfoProto", False),
    ],
    "SeqInfoProto": [(1, "is_dyn_len", "bool", False), (2, "tuple_elem_item", "AttributeProto", False)],
    "ValueInfoProto": [
        (1, "name", "string", False), (2, "tensor", "TensorProto", True), (3, "doc_string", "string", False),
        (4, "denotation", "string", False), (5, "attr_info", "AttributeProto", False),
    ],
    "NodeProto": [
        (1, "input", "string", True), (2, "output", "string", True), (3, "name", "string", False),
        (4, "op_type", "string", False), (5, "attribute", "AttributeProto", True),
        (6, "doc_string", "string", False), (7, "domain", "string", False),
        (8, "node_attr", "AttributeProto", True), (9, "primal_attr", "AttributeProto", True),
    ],
    "ModelProto": [
        (1, "ir_version", "string", False), (2, "producer_name", "string", False),
        (3, "producer_version", "string", False), (4, "domain", "string", False),
        (5, "model_version", "string", False), (6, "doc_string", "string", False),
        (7, "graph", "GraphProto", False), (8, "functions", "GraphProto", True),
        (10, "little_endian", "bool", False), (12, "primitives", "PrimitiveProto", True),
        (13, "mind_ir_version", "int64", False),
    ],
    "GraphProto": [
        (1, "node", "NodeProto", True), (2, "name", "string", False), (3, "parameter", "TensorProto", True),
        (4, "doc_string", "string", False), (5, "input", "ValueInfoProto", True),
        (6, "output", "ValueInfoProto", True), (8, "attribute", "AttributeProto", True),
    ],
    "TensorProto": [
        (1, "dims", "int64", True), (2, "data_type", "int32", False), (3, "float_data", "float", True),
        (4, "int32_data", "int32", True), (5, "string_data", "bytes", True), (6, "int64_data", "int64", True),
        (7, "name", "string", False), (8, "doc_string", "string", False), (9, "raw_data", "bytes", False),
        (10, "double_data", "double", True), (11, "uint64_data", "uint64", True),
        (12, "external_data", "ExternalDataProto", False), (13, "ref_key", "string", False),
    ],
    "ExternalDataProto": [(1, "location", "string", False), (2, "offset", "int64", False),
                          (3, "length", "int64", False)],
    "PrimitiveProto": [
        (1, "name", "string", False), (2, "op_type", "string", False), (3, "attribute", "AttributeProto", True),
        (4, "instance_name", "string", False), (5, "prim_type", "int32", False),
    ],
}


class AttributeType:
    """AttributeProto.type values."""

    UNDEFINED, FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = range(10)
    FLOAT16, DOUBLE, UINT32, UINT64 = 10, 11, 12, 13
    TENSOR, GRAPH, TENSORS, TUPLE, LIST, DICT, UMONAD, IOMONAD, NONE = 17, 18, 19, 20, 21, 22, 23, 24, 25


class DataType:
    """TensorProto.data_type values (ONNX's numbering up to BFLOAT16)."""

    UNDEFINED, FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = range(10)
    FLOAT16, DOUBLE, UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16, FLOAT64 = range(10, 18)


class PrimType:
    """PrimitiveProto.prim_type: settings as attributes (PRIMITIVE) or as Constant node inputs (FUNCTION)."""

    PRIMITIVE = 1
    PRIMITIVE_FUNCTION = 2


MIND_IR_VERSION = 3  # what MindSpore 2.x writes and what mindspore.load needs to accept a file

_SCALARS = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=f"{PACKAGE}.proto", package=PACKAGE, syntax="proto2")
    for message_name, fields in MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for number, name, kind, repeated in fields:
            field = message.field.add(name=name, number=number)
            field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                           else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
    return file


def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_file_descriptor().SerializeToString())
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.22
        from google.protobuf.message_factory import MessageFactory

        factory = MessageFactory(pool)
        return {n: factory.GetPrototype(pool.FindMessageTypeByName(f"{PACKAGE}.{n}")) for n in MESSAGES}
    return {n: GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{n}")) for n in MESSAGES}


_CLASSES = _message_classes()
ModelProto = _CLASSES["ModelProto"]
GraphProto = _CLASSES["GraphProto"]
NodeProto = _CLASSES["NodeProto"]
TensorProto = _CLASSES["TensorProto"]
AttributeProto = _CLASSES["AttributeProto"]
ValueInfoProto = _CLASSES["ValueInfoProto"]
PrimitiveProto = _CLASSES["PrimitiveProto"]
