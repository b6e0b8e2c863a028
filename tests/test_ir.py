"""IR verifier (compiler/ir.py `Graph.verify`): negative tests on a small hand-built graph.

Each broken graph must raise IRError whose message names the op (index and name) or the tensor,
and the shapes involved.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tt_support import tiny_graph

from compiler.ir import Add, AvgPool, Conv, Graph, Head, IRError, Tensor


def replace_op(g: Graph, index: int, **changes) -> Graph:
    ops = list(g.ops)
    ops[index] = dataclasses.replace(ops[index], **changes)
    return dataclasses.replace(g, ops=tuple(ops))


def with_tensor(g: Graph, name: str, **changes) -> Graph:
    tensors = dict(g.tensors)
    tensors[name] = dataclasses.replace(tensors[name], **changes)
    return dataclasses.replace(g, tensors=tensors)


def op_index(g: Graph, name: str) -> int:
    return next(i for i, op in enumerate(g.ops) if op.name == name)


def expect_error(g: Graph, *needles: str) -> str:
    with pytest.raises(IRError) as info:
        g.verify()
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, f"IRError does not mention {n!r}: {msg}"
    return msg


def test_tiny_graph_is_valid():
    g = tiny_graph()
    assert g.verify() is g
    assert [type(op).__name__ for op in g.ops] == ["Conv"] * 4 + ["Add", "Conv", "Conv", "AvgPool"]


def test_wrong_channel_count():
    """b0.pw1 is given weights for 5 input channels; its input has 8."""
    g = tiny_graph()
    i = op_index(g, "b0.pw1")
    w = np.zeros((12, 5, 1, 1), np.int8)
    expect_error(replace_op(g, i, weight=w), f"op {i} (b0.pw1)", "(5, 7, 8)", "8 channels", "(12, 5, 1, 1)")


def test_wrong_depthwise_channel_count():
    g = tiny_graph()
    i = op_index(g, "b1.dw")
    op = g.ops[i]
    w = np.zeros((6, 1, 5, 5), np.int8)
    broken = replace_op(g, i, weight=w, bias=op.bias[:6], w_scales=op.w_scales[:6])
    msg = expect_error(broken, f"op {i} (b1.dw)")
    assert "(5, 7, 8)" in msg or "(3, 4, 8)" in msg


def test_wrong_output_shape():
    g = tiny_graph()
    i = op_index(g, "b1.dw")
    expect_error(with_tensor(g, "b1.dw", shape=(4, 4, 8)), f"op {i} (b1.dw)", "(4, 4, 8)", "(3, 4, 8)",
                 "(5, 7, 8)")


def test_wrong_output_shape_from_stride():
    g = tiny_graph()
    i = op_index(g, "b1.dw")
    expect_error(replace_op(g, i, stride=1), f"op {i} (b1.dw)", "(3, 4, 8)", "(5, 7, 8)")


def test_stride_zero():
    g = tiny_graph()
    i = op_index(g, "b1.dw")
    expect_error(replace_op(g, i, stride=0), f"op {i} (b1.dw)", "stride 0")


def test_tensor_produced_twice():
    g = tiny_graph()
    i = op_index(g, "b0.pw2")
    expect_error(replace_op(g, i, output="b0.pw1"), f"op {i} (b0.pw2)", "'b0.pw1'", "twice")


def test_undeclared_input():
    g = tiny_graph()
    i = op_index(g, "b0.dw")
    expect_error(replace_op(g, i, input="ghost"), f"op {i} (b0.dw)", "'ghost'")


def test_input_used_before_it_is_produced():
    g = tiny_graph()
    i = op_index(g, "b0.pw1")
    expect_error(replace_op(g, i, input="b0.dw"), f"op {i} (b0.pw1)", "'b0.dw'", "earlier")


def test_undeclared_output():
    g = tiny_graph()
    i = op_index(g, "b1.pw")
    msg = expect_error(replace_op(g, i, output="nowhere"), f"op {i} (b1.pw)", "'nowhere'")
    assert "not declared" in msg


def test_undeclared_graph_input():
    expect_error(dataclasses.replace(tiny_graph(), input="camera"), "'camera'")


def test_bad_head_shape():
    g = tiny_graph()
    head = Head("pool", np.zeros((3, 7), np.float32), np.zeros(3, np.float32))  # pool has 6 features
    expect_error(dataclasses.replace(g, head=head), "head", "'pool'", "(1, 1, 6)", "(1, 1, 7)")


def test_head_on_a_map_not_pooled():
    g = tiny_graph()
    head = Head("b1.pw", np.zeros((3, 6), np.float32), np.zeros(3, np.float32))
    expect_error(dataclasses.replace(g, head=head), "head", "'b1.pw'", "(3, 4, 6)")


@pytest.mark.parametrize(("weight", "bias", "needles"), [
    (np.zeros((3, 6), np.float64), np.zeros(3, np.float32), ("float64",)),
    (np.zeros((3, 6), np.float32), np.zeros(4, np.float32), ("(4,)",)),
    (np.zeros((1, 6), np.float32), np.zeros(1, np.float32), ("classes>=2",)),
])
def test_bad_head_parameters(weight, bias, needles):
    expect_error(dataclasses.replace(tiny_graph(), head=Head("pool", weight, bias)), "head", *needles)


def test_add_shapes_differ():
    g = tiny_graph()
    i = op_index(g, "b0.add")
    expect_error(replace_op(g, i, inputs=("conv0", "b0.pw1")), f"op {i} (b0.add)", "(5, 7, 8)", "(5, 7, 12)")


def test_pool_must_keep_quantisation_and_give_1x1():
    g = tiny_graph()
    i = op_index(g, "pool")
    expect_error(with_tensor(g, "pool", zero=0), f"op {i} (pool)", "(3, 4, 6)")
    expect_error(with_tensor(g, "pool", shape=(1, 2, 3)), f"op {i} (pool)", "(1, 2, 3)")


@pytest.mark.parametrize(("change", "needles"), [
    ({"weight": np.zeros((8, 3, 3, 3), np.int16)}, ("int16",)),
    ({"weight": np.zeros((8, 3, 2, 2), np.int8)}, ("(8, 3, 2, 2)", "odd")),
    ({"weight": np.zeros((8, 3, 3, 1), np.int8)}, ("(8, 3, 3, 1)",)),
    ({"bias": np.zeros(8, np.int64)}, ("int64",)),
    ({"bias": np.zeros(7, np.int32)}, ("(7,)",)),
    ({"w_scales": np.zeros(8, np.float32)}, ("w_scales",)),
    ({"w_scales": np.ones(9, np.float32)}, ("(9,)",)),
    ({"kind": "transposed"}, ("'transposed'",)),
], ids=["weight_dtype", "even_kernel", "non_square", "bias_dtype", "bias_len", "w_scales_zero",
        "w_scales_len", "kind"])
def test_conv_parameter_errors(change, needles):
    g = tiny_graph()
    expect_error(replace_op(g, 0, **change), "op 0 (conv0)", *needles)


def test_pointwise_with_a_3x3_kernel():
    g = tiny_graph()
    i = op_index(g, "b0.pw1")
    op = g.ops[i]
    expect_error(replace_op(g, i, weight=np.zeros((12, 8, 3, 3), np.int8), bias=op.bias), f"op {i} (b0.pw1)",
                 "kernel 3")


def test_depthwise_weight_must_be_c_1_k_k():
    g = tiny_graph()
    i = op_index(g, "b0.dw")
    expect_error(replace_op(g, i, weight=np.zeros((12, 2, 3, 3), np.int8)), f"op {i} (b0.dw)",
                 "(12, 2, 3, 3)")


@pytest.mark.parametrize(("change", "needle"), [({"zero": 128}, "128"), ({"zero": -129}, "-129"),
                                                ({"scale": 0.0}, "0.0"), ({"scale": -1.0}, "-1.0")])
def test_tensor_quantisation_out_of_range(change, needle):
    expect_error(with_tensor(tiny_graph(), "b0.dw", **change), "b0.dw", needle)


def test_tensor_declared_but_never_produced():
    g = tiny_graph()
    tensors = dict(g.tensors)
    tensors["orphan"] = Tensor("orphan", (1, 1, 1), 1.0, 0)
    expect_error(dataclasses.replace(g, tensors=tensors), "orphan", "never produced")


def test_unknown_op_type():
    @dataclasses.dataclass(frozen=True)
    class Softmax:
        name: str
        input: str
        output: str

    g = tiny_graph()
    ops = list(g.ops)
    ops[-1] = Softmax("pool", "b1.pw", "pool")
    expect_error(dataclasses.replace(g, ops=tuple(ops)), f"op {len(ops) - 1} (pool)", "Softmax")


def test_ops_are_the_expected_types():
    g = tiny_graph()
    assert isinstance(g.ops[0], Conv) and isinstance(g.ops[4], Add) and isinstance(g.ops[-1], AvgPool)
