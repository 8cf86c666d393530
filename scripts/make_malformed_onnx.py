#!/usr/bin/env python3
"""Writes the malformed ONNX files of tests/malformed/onnx, each broken in one way.

tests/onnx_import.rs (malformed_models_fail_clearly) asserts that importing each one fails with an
error naming the file and the node, initializer or field at fault. Deterministic: re-running this
script rewrites the same bytes.

Usage: pip install onnx numpy && python3 scripts/make_malformed_onnx.py
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "malformed", "onnx")


def model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="bitnetc-tests")
    m.ir_version = 8
    return m


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def add_model(w):
    """y = x + w with x, y float [2, 3]."""
    return model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")], [vi("x", [2, 3])], [vi("y", [2, 3])], [w])


def external(location, offset=None, length=None):
    w = TensorProto()
    w.name = "w"
    w.data_type = TensorProto.FLOAT
    w.dims.extend([2, 3])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            e = w.external_data.add()
            e.key, e.value = key, str(value)
    return add_model(w)


def save(name, m):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(m.SerializeToString() if not isinstance(m, bytes) else m)


def main():
    os.makedirs(OUT, exist_ok=True)
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    good = add_model(w).SerializeToString()

    save("empty.onnx", b"")
    save("garbage.onnx", bytes((i * 37 + 11) % 256 for i in range(200)) + b"\x07\xff\xff")
    save("truncated.onnx", good[: len(good) * 2 // 3])
    no_graph = onnx.ModelProto()
    no_graph.ir_version = 8
    no_graph.opset_import.add().version = 18
    save("no_graph.onnx", no_graph)
    save(
        "opset12.onnx",
        model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=12),
    )
    save(
        "unknown_ops.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["a"], name="relu0"),
                helper.make_node("Conv", ["a", "a"], ["b"], name="conv0"),
                helper.make_node("FooBar", ["b"], ["c"], name="foo"),
                helper.make_node("FooBar", ["c"], ["d"], name="foo2"),
                helper.make_node("Custom", ["d"], ["y"], name="custom", domain="com.example"),
            ],
            [vi("x", [1, 1, 3, 3])],
            [vi("y", [1, 1, 3, 3])],
        ),
    )

    bad = TensorProto()
    bad.name, bad.data_type = "w", TensorProto.FLOAT
    bad.dims.extend([2, 3])
    bad.raw_data = bytes(10)
    save("raw_size_mismatch.onnx", add_model(bad))

    typed = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0])
    del typed.float_data[3:]
    m = add_model(typed)
    save("typed_count_mismatch.onnx", m)

    save("external_dotdot.onnx", external("../weights.bin"))
    save("external_absolute.onnx", external("/etc/passwd"))
    with open(os.path.join(OUT, "weights.bin"), "wb") as f:
        f.write(bytes(32))
    save("external_out_of_range.onnx", external("weights.bin", offset=16, length=24))
    save("external_length_mismatch.onnx", external("weights.bin", offset=0, length=8))
    save("external_missing_file.onnx", external("missing.bin"))

    s = helper.make_tensor("s", TensorProto.STRING, [1], [b"hello"])
    save(
        "string_initializer.onnx",
        model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", [1])], [vi("y", [1])], [s]),
    )
    save(
        "undefined_input.onnx",
        model([helper.make_node("Add", ["x", "nowhere"], ["y"], name="add0")], [vi("x", [2])], [vi("y", [2])]),
    )
    save(
        "dynamic_reshape_shape.onnx",
        model(
            [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape0")],
            [vi("x", [2, 3]), vi("shape", [2], TensorProto.INT64)],
            [vi("y", [3, 2])],
        ),
    )
    neg = TensorProto()
    neg.name, neg.data_type = "w", TensorProto.FLOAT
    neg.dims.extend([2, -3])
    save("negative_dims.onnx", add_model(neg))


if __name__ == "__main__":
    main()
