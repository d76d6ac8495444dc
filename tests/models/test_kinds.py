"""The op registry kind by kind: shapes, FLOPs (each module docstring's formula, by hand on small shapes),
the boxes a task reads, local ops, batch norm's statistics, ShapeError lines, and each kind's JAX computation
against a plain jax.numpy reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from models.errors import ShapeError
from models.graph import GraphBuilder
from models.network import apply_op, layer_params, op_layer
from models.op import OpKind, Padding, input_boxes, kind_spec, local_op, registered_kinds, task_input_boxes


def every_kind_graph():
    """One op of every kind, small (NHWC): data (2, 6, 6, 3) -> stem conv k3 s2 SAME 4 ch (2, 3, 3, 4) -> conv2
    k1 4 ch -> bn -> add(stem, bn) -> avg k3 s1 SAME -> max k2 s1 VALID (2, 2, 2, 4); side conv k1 2 ch of stem;
    cat(stem, side) (2, 3, 3, 6) -> gap (2, 6); flatten(max) (2, 16) -> dense 5 -> loss (2,)."""
    b = GraphBuilder("kinds", "toy", (2, 6, 6, 3))
    b.conv2d("stem", 4, kernel=3, stride=2)
    b.conv2d("conv2", 4, kernel=1)
    b.batch_norm("bn", relu=True)
    b.add("sum", inputs=["stem", "bn"])
    b.avg_pool2d("avg")
    b.pool2d("max", kernel=2, stride=1)
    b.conv2d("side", 2, kernel=1, input="stem")
    b.concat("cat", inputs=["stem", "side"])
    b.global_avg_pool("gap", input="cat")
    b.flatten("flat", input="max")
    b.dense("fc", 5, relu=False)
    b.softmax_xent("loss")
    return b.build(2)


GRAPH = every_kind_graph()


def test_every_kind_has_a_registered_spec():
    assert registered_kinds() == set(OpKind)
    for kind in OpKind:
        assert kind_spec(kind).kind is kind


def test_shape_inference_of_every_kind():
    shapes = {op.name: (op.kind, op.input_shapes, op.output_shape) for op in GRAPH.ops}
    assert shapes == {
        # SAME, stride 2: ceil(6 / 2) = 3.
        "stem": (OpKind.CONV2D, ((2, 6, 6, 3),), (2, 3, 3, 4)),
        "conv2": (OpKind.CONV2D, ((2, 3, 3, 4),), (2, 3, 3, 4)),
        "bn": (OpKind.BATCH_NORM, ((2, 3, 3, 4),), (2, 3, 3, 4)),
        "sum": (OpKind.ADD, ((2, 3, 3, 4), (2, 3, 3, 4)), (2, 3, 3, 4)),
        "avg": (OpKind.AVG_POOL2D, ((2, 3, 3, 4),), (2, 3, 3, 4)),
        # VALID, kernel 2, stride 1: (3 - 2) // 1 + 1 = 2.
        "max": (OpKind.POOL2D, ((2, 3, 3, 4),), (2, 2, 2, 4)),
        "side": (OpKind.CONV2D, ((2, 3, 3, 4),), (2, 3, 3, 2)),
        "cat": (OpKind.CONCAT, ((2, 3, 3, 4), (2, 3, 3, 2)), (2, 3, 3, 6)),
        "gap": (OpKind.GLOBAL_AVG_POOL, ((2, 3, 3, 6),), (2, 6)),
        "flat": (OpKind.FLATTEN, ((2, 2, 2, 4),), (2, 16)),
        "fc": (OpKind.DENSE, ((2, 16),), (2, 5)),
        "loss": (OpKind.SOFTMAX_XENT, ((2, 5),), (2,)),
    }
    assert GRAPH.producers("sum") == ("stem", "bn") and GRAPH.producers("cat") == ("stem", "side")
    assert GRAPH.consumers("stem") == ("conv2", "sum", "side", "cat")
    assert GRAPH.producers("stem") == () and not GRAPH.op("stem").input_grad and GRAPH.op("conv2").input_grad
    bn = GRAPH.op("bn")
    assert bn.param_shapes == (("scale", (4,)), ("bias", (4,))) and bn.state_shapes == (("mean", (4,)), ("var", (4,)))
    assert dict(GRAPH.op("stem").param_shapes) == {"kernel": (3, 3, 3, 4), "bias": (4,)}
    assert dict(GRAPH.op("fc").param_shapes) == {"kernel": (16, 5), "bias": (5,)}


# (op, forward FLOPs, backward FLOPs), by the formula in each kind's module docstring.
FLOPS = [
    # conv2d: 2 * N * Ho * Wo * Co * Kh * Kw * Ci = 2 * 2*3*3*4 * 3*3 * 3 = 2 * 72 * 27 = 3888;
    # it reads the data batch (no input gradient): backward = 1 * forward.
    ("stem", 3888, 3888),
    # conv2 k1: 2 * 72 * 1*1 * 4 = 576; backward = 2 * 576 = 1152.
    ("conv2", 576, 1152),
    # batch_norm: 7 * elements = 7 * 72 = 504; backward 2 * 504 = 1008.
    ("bn", 504, 1008),
    # add of 2 inputs: (2 - 1) * 72 = 72; backward = forward.
    ("sum", 72, 72),
    # avg pool k3 SAME: N*Ho*Wo*C * Kh*Kw = 72 * 9 = 648; backward = forward.
    ("avg", 648, 648),
    # max pool k2 VALID: 2*2*2*4 * 2*2 = 32 * 4 = 128.
    ("max", 128, 128),
    # side conv k1, 4 -> 2 ch: 2 * 2*3*3*2 * 1 * 4 = 2 * 36 * 4 = 288; backward 576.
    ("side", 288, 576),
    # concat: a copy, 0.
    ("cat", 0, 0),
    # global_avg_pool: N*H*W*C of its input = 2*3*3*6 = 108; backward = forward.
    ("gap", 108, 108),
    # flatten: a reshape, 0.
    ("flat", 0, 0),
    # dense: 2 * N * In * Out = 2 * 2 * 16 * 5 = 320; backward 2 * 320 = 640.
    ("fc", 320, 640),
    # softmax_xent: 5 * N * classes = 5 * 2 * 5 = 50; backward 2 * 10 = 20.
    ("loss", 50, 20),
]


@pytest.mark.parametrize("name,forward,backward", FLOPS, ids=[f[0] for f in FLOPS])
def test_flops_follow_the_module_docstring(name, forward, backward):
    op = GRAPH.op(name)
    assert (op.forward_flops, op.backward_flops) == (forward, backward)


def test_flops_of_an_add_of_three_and_a_dense_reading_the_data_batch():
    b = GraphBuilder("three", "toy", (2, 3, 3, 4))
    for name in ("a", "b", "c"):
        b.batch_norm(name, input=None)
    b.add("sum3", inputs=["a", "b", "c"], relu=True)
    graph = b.build(2)
    # (3 - 1) * 2*3*3*4 = 144, backward the same.
    assert (graph.op("sum3").forward_flops, graph.op("sum3").backward_flops) == (144, 144)
    d = GraphBuilder("fc", "toy", (4, 10))
    d.dense("fc", 3)
    # 2 * 4 * 10 * 3 = 240; reading the data batch, backward = 1 * forward.
    assert (d.build(4).op("fc").forward_flops, d.build(4).op("fc").backward_flops) == (240, 240)


# --- input boxes ---------------------------------------------------------------------------------------

def test_conv_input_box_has_its_halo():
    b = GraphBuilder("halo", "toy", (1, 8, 8, 3))
    b.conv2d("c", 5, kernel=3)  # SAME, stride 1: leading padding 1
    conv = b.build(1).op("c")
    # Rows [4, 8): from 4*1 - 1 = 3 to (8-1)*1 - 1 + 3 = 9, clipped to 8; columns [0, 4): -1 -> 0 to 3 - 1 + 3 = 5;
    # channels: all 3 input channels, whatever the output channels.
    assert input_boxes(conv, ((0, 1), (4, 8), (0, 4), (1, 3))) == (((0, 1), (3, 8), (0, 5), (0, 3)),)
    # Split on its channels, a task reads its input whole in height and width (task_input_boxes).
    assert task_input_boxes(conv, (1, 2, 1, 2, 1), ((0, 1), (4, 8), (0, 8), (0, 2))) == (((0, 1), (0, 8), (0, 8), (0, 3)),)
    assert task_input_boxes(conv, (1, 2, 1, 1, 1), ((0, 1), (4, 8), (0, 8), (0, 5))) == (((0, 1), (3, 8), (0, 8), (0, 3)),)


def test_avg_pool_input_box_keeps_its_channels_and_has_its_halo():
    op = GRAPH.op("avg")  # k3 s1 SAME on 3x3: padding 1
    # Rows [0, 1): -1 -> 0 to 0 - 1 + 3 = 2; columns [2, 3): 1 to 2 - 1 + 3 = 4, clipped to 3.
    assert input_boxes(op, ((0, 1), (0, 1), (2, 3), (1, 3))) == (((0, 1), (0, 2), (1, 3), (1, 3)),)


def concat3():
    b = GraphBuilder("cat3", "toy", (2, 4, 4, 3))
    b.conv2d("a", 4, kernel=1, input=None)
    b.conv2d("b", 2, kernel=1, input=None)
    b.conv2d("c", 3, kernel=1, input=None)
    b.concat("cat", inputs=["a", "b", "c"])  # channels: a [0, 4), b [4, 6), c [6, 9)
    return b.build(2).op("cat")


def test_concat_reads_from_each_input_its_part_of_the_channel_range():
    cat = concat3()
    assert cat.output_shape == (2, 4, 4, 9)
    head = ((0, 1), (0, 2), (2, 4))
    # Output channels [2, 5): a's [2, 4), b's [0, 1), nothing of c.
    assert input_boxes(cat, head + ((2, 5),)) == (head + ((2, 4),), head + ((0, 1),), head + ((0, 0),))
    # [4, 6): nothing of a, all of b, nothing of c (its range starts at 6).
    assert input_boxes(cat, head + ((4, 6),)) == (head + ((0, 0),), head + ((0, 2),), head + ((0, 0),))
    # [5, 9): b's [1, 2), all of c.
    assert input_boxes(cat, head + ((5, 9),)) == (head + ((0, 0),), head + ((1, 2),), head + ((0, 3),))


def test_global_avg_pool_reads_all_of_height_and_width():
    gap = GRAPH.op("gap")  # (2, 3, 3, 6) -> (2, 6)
    assert input_boxes(gap, ((1, 2), (2, 5))) == (((1, 2), (0, 3), (0, 3), (2, 5)),)


def test_batch_norm_and_add_read_their_own_box():
    box = ((0, 1), (1, 3), (0, 2), (2, 4))
    assert input_boxes(GRAPH.op("bn"), box) == (box,)
    assert input_boxes(GRAPH.op("sum"), box) == (box, box)


# --- local ops -----------------------------------------------------------------------------------------

def test_local_op_of_a_channel_split_concat():
    b = GraphBuilder("cat", "toy", (8, 4, 4, 3))
    b.conv2d("a", 4, kernel=1, input=None)
    b.conv2d("b", 2, kernel=1, input=None)
    b.concat("cat", inputs=["a", "b"])
    cat = b.build(8).op("cat")  # (8,4,4,4) + (8,4,4,2) -> (8,4,4,6)
    local = local_op(cat, (2, 1, 1, 2))
    # 1/2 of every input's channels (and half the batch): (4,4,4,2), (4,4,4,1) -> (4,4,4,3).
    assert local.input_shapes == ((4, 4, 4, 2), (4, 4, 4, 1)) and local.output_shape == (4, 4, 4, 3)
    assert local.name == "" and local.kind is OpKind.CONCAT


def test_local_op_of_batch_norm_splits_params_and_state_only_on_channels():
    b = GraphBuilder("bn", "toy", (4, 4, 4, 8))
    b.batch_norm("bn", input=None)
    bn = b.build(4).op("bn")
    by_sample = local_op(bn, (2, 1, 1, 1))
    assert by_sample.input_shapes == ((2, 4, 4, 8),) and by_sample.output_shape == (2, 4, 4, 8)
    assert by_sample.param_shapes == (("scale", (8,)), ("bias", (8,)))
    assert by_sample.state_shapes == (("mean", (8,)), ("var", (8,)))
    by_channel = local_op(bn, (2, 1, 1, 2))
    assert by_channel.output_shape == (2, 4, 4, 4)
    assert by_channel.param_shapes == (("scale", (4,)), ("bias", (4,)))
    assert by_channel.state_shapes == (("mean", (4,)), ("var", (4,)))
    # 7 * 2*4*4*4 = 896 = a quarter of 7 * 4*4*4*8.
    assert by_channel.forward_flops == 896 == bn.forward_flops // 4


def test_local_op_of_global_avg_pool_reads_whole_height_and_width():
    b = GraphBuilder("gap", "toy", (4, 3, 3, 4))
    b.global_avg_pool("gap", input=None)
    gap = b.build(4).op("gap")
    local = local_op(gap, (2, 2))
    assert local.input_shapes == ((2, 3, 3, 2),) and local.output_shape == (2, 2)
    assert local.forward_flops == 2 * 3 * 3 * 2


def test_batch_norm_stats_bytes():
    b = GraphBuilder("bn", "toy", (4, 4, 4, 8))
    b.batch_norm("bn", input=None)
    bn = b.build(4).op("bn")
    stats = bn.spec.stats_bytes
    assert stats(bn, (1, 1, 1, 1)) == 0  # whole: nothing to all-reduce
    assert stats(bn, (1, 1, 1, 2)) == 0  # channels only: each task has all of its channels' statistics
    assert stats(bn, (2, 1, 1, 1)) == 2 * 8 * 4 == 64  # sums of x and x^2 of 8 float32 channels
    assert stats(bn, (1, 2, 1, 1)) == 64 and stats(bn, (1, 1, 2, 1)) == 64
    assert stats(bn, (2, 1, 1, 2)) == 2 * 4 * 4 == 32  # of its 4 local channels
    assert stats(bn, (1, 1, 2, 4)) == 2 * 2 * 4 == 16
    for name in ("stem", "sum", "avg", "cat", "gap", "fc"):
        op = GRAPH.op(name)
        assert op.spec.stats_bytes(op, (2,) + (1,) * (len(op.output_shape) - 1)) == 0


# --- ShapeError ----------------------------------------------------------------------------------------

def _one_line_error(build, match):
    with pytest.raises(ShapeError, match=match) as error:
        build()
    assert "\n" not in str(error.value)


def test_add_of_mismatched_shapes():
    def build():
        b = GraphBuilder("m", "toy", (2, 4, 4, 3))
        b.conv2d("a", 4, kernel=1, input=None)
        b.conv2d("b", 8, kernel=1, input=None)
        b.add("sum", inputs=["a", "b"])
    _one_line_error(build, r"add 'sum' sums inputs of different shapes a \(2, 4, 4, 4\), b \(2, 4, 4, 8\)")


def test_concat_of_mismatched_spatial_dims():
    def build():
        b = GraphBuilder("m", "toy", (2, 4, 4, 3))
        b.conv2d("a", 4, kernel=1, input=None)
        b.conv2d("b", 4, kernel=1, stride=2, input=None)
        b.concat("cat", inputs=["a", "b"])
    _one_line_error(build, r"concat 'cat' joins inputs whose dims other than the channels differ")


def test_add_with_one_input():
    def build():
        b = GraphBuilder("m", "toy", (2, 4, 4, 3))
        b.conv2d("a", 4, kernel=1, input=None)
        b.add("sum", inputs=["a"])
    _one_line_error(build, r"op 'sum' needs at least two inputs, got \['a'\]")


def test_reading_an_unknown_op():
    def single_input():
        b = GraphBuilder("m", "toy", (2, 4, 4, 3))
        b.conv2d("a", 4, kernel=1, input=None)
        b.batch_norm("bn", input="nope")

    def multi_input():
        b = GraphBuilder("m", "toy", (2, 4, 4, 3))
        b.conv2d("a", 4, kernel=1, input=None)
        b.concat("cat", inputs=["a", "nope"])
    _one_line_error(single_input, r"'m' has no op 'nope' to read")
    _one_line_error(multi_input, r"'m' has no op 'nope' to read")


def test_add_cannot_read_the_data_batch_directly():
    b = GraphBuilder("m", "toy", (2, 4, 4, 3))
    b.conv2d("a", 3, kernel=1, input=None)
    with pytest.raises(ShapeError, match=r"^op 'sum' lists the data batch \(None\) among its inputs; only "
                                         r"single-input ops read the data: read it through an op first$"):
        b.add("sum", inputs=[None, "a"])


# --- the JAX computations ------------------------------------------------------------------------------

def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _params(op, seed):
    """Random values in the shapes of the op's layer's parameters (its layer built abstractly: flax's eager
    initializers take seconds; random values also keep a scale of 1 or a bias of 0 from hiding a parameter
    the computation ignores)."""
    params = layer_params(nnx.eval_shape(lambda: op_layer(op, nnx.Rngs(seed))))  # abstract: no initializer runs
    assert {name: tuple(value.shape) for name, value in params.items()} == dict(op.param_shapes)
    return {name: _random(value.shape, seed + i + 1) for i, (name, value) in enumerate(sorted(params.items()))}


def _inputs(op, seed):
    return tuple(_random(shape, seed + 10 * i) for i, shape in enumerate(op.input_shapes))


def _check(actual, expected, shape):
    assert tuple(actual.shape) == shape
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_apply_conv2d():
    for name in ("stem", "conv2", "side"):
        op = GRAPH.op(name)
        params, (x,) = _params(op, 1), _inputs(op, 2)
        stride = op.attrs.stride_hw
        y = lax.conv_general_dilated(x, params["kernel"], stride, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        # stem, conv2 and side have ReLU (the default).
        _check(apply_op(op, params, (x,)), jnp.maximum(y + params["bias"], 0), op.output_shape)


def test_apply_conv2d_valid_without_bias_or_relu():
    b = GraphBuilder("v", "toy", (2, 5, 5, 3))
    b.conv2d("c", 4, kernel=2, stride=2, padding=Padding.VALID, relu=False, bias=False, input=None)
    op = b.build(2).op("c")
    assert op.output_shape == (2, 2, 2, 4)
    params, (x,) = _params(op, 3), _inputs(op, 4)
    assert set(params) == {"kernel"}
    y = lax.conv_general_dilated(x, params["kernel"], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _check(apply_op(op, params, (x,)), y, op.output_shape)


def test_apply_batch_norm():
    op = GRAPH.op("bn")  # relu=True
    params, (x,) = _params(op, 5), _inputs(op, 6)
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    y = (x - mean) / jnp.sqrt(var + 1e-5) * params["scale"] + params["bias"]
    _check(apply_op(op, params, (x,)), jnp.maximum(y, 0), op.output_shape)
    # The layer's own initialization: scale 1, bias 0.
    init = layer_params(op_layer(op, nnx.Rngs(0)))
    np.testing.assert_array_equal(init["scale"], np.ones(4))
    np.testing.assert_array_equal(init["bias"], np.zeros(4))


def test_apply_add_with_relu_and_without():
    op = GRAPH.op("sum")  # relu=False
    a, b = _inputs(op, 7)
    _check(apply_op(op, None, (a, b)), a + b, op.output_shape)
    g = GraphBuilder("add3", "toy", (2, 3, 3, 4))
    for name in ("a", "b", "c"):
        g.batch_norm(name, input=None)
    g.add("sum3", inputs=["a", "b", "c"], relu=True)
    op3 = g.build(2).op("sum3")
    x, y, z = _inputs(op3, 8)
    _check(apply_op(op3, None, (x, y, z)), jnp.maximum(x + y + z, 0), op3.output_shape)


def test_apply_avg_pool_same_counts_the_padding():
    op = GRAPH.op("avg")  # k3 s1 SAME on (2, 3, 3, 4)
    (x,) = _inputs(op, 9)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = sum(padded[:, i:i + 3, j:j + 3, :] for i in range(3) for j in range(3)) / 9
    y = apply_op(op, None, (x,))
    _check(y, expected, op.output_shape)
    # The corner window holds 4 real elements of its 9: their sum over 9, not over 4.
    np.testing.assert_allclose(y[0, 0, 0, 0], jnp.sum(x[0, :2, :2, 0]) / 9, rtol=1e-5)
    _check(y, nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=True), op.output_shape)


def test_apply_max_pool_and_its_gradient():
    op = GRAPH.op("max")  # k2 s1 VALID on (2, 3, 3, 4)
    (x,) = _inputs(op, 10)
    expected = jnp.max(jnp.stack([x[:, i:i + 2, j:j + 2, :] for i in range(2) for j in range(2)]), axis=0)
    _check(apply_op(op, None, (x,)), expected, op.output_shape)
    # Its own backward: the gradient of each window goes to its maximum (no ties in random input).
    weights = _random(op.output_shape, 11)
    grad = jax.grad(lambda v: jnp.sum(apply_op(op, None, (v,)) * weights))(x)
    reference = jax.grad(lambda v: jnp.sum(lax.reduce_window(v, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1),
                                                             "VALID") * weights))(x)
    _check(grad, reference, x.shape)


def test_apply_concat_along_the_last_axis():
    op = GRAPH.op("cat")
    a, b = _inputs(op, 12)
    y = apply_op(op, None, (a, b))
    _check(y, jnp.concatenate([a, b], axis=3), op.output_shape)
    np.testing.assert_array_equal(y[..., 4:], b)


def test_apply_global_avg_pool():
    op = GRAPH.op("gap")
    (x,) = _inputs(op, 13)
    _check(apply_op(op, None, (x,)), jnp.mean(x, axis=(1, 2)), op.output_shape)


def test_apply_flatten():
    op = GRAPH.op("flat")
    (x,) = _inputs(op, 14)
    _check(apply_op(op, None, (x,)), x.reshape(2, 16), op.output_shape)


def test_apply_dense_and_its_gradient():
    op = GRAPH.op("fc")  # relu=False
    params, (x,) = _params(op, 15), _inputs(op, 16)
    _check(apply_op(op, params, (x,)), x @ params["kernel"] + params["bias"], op.output_shape)
    g = GraphBuilder("relu", "toy", (2, 16))
    g.dense("fc", 5, input=None)  # relu=True by default
    relu_op = g.build(2).op("fc")
    _check(apply_op(relu_op, params, (x,)), jnp.maximum(x @ params["kernel"] + params["bias"], 0), relu_op.output_shape)
    # The custom backward gives autodiff's gradients (kernel in its (in, out) orientation).
    weights = _random(op.output_shape, 17)
    ours = jax.grad(lambda p, v: jnp.sum(apply_op(op, p, (v,)) * weights), argnums=(0, 1))(params, x)
    plain = jax.grad(lambda p, v: jnp.sum((v @ p["kernel"] + p["bias"]) * weights), argnums=(0, 1))(params, x)
    for key in ("kernel", "bias"):
        _check(ours[0][key], plain[0][key], tuple(params[key].shape))
    _check(ours[1], plain[1], x.shape)


def test_apply_softmax_xent():
    op = GRAPH.op("loss")
    (logits,) = _inputs(op, 18)
    labels = jnp.array([3, 0])
    expected = -jax.nn.log_softmax(logits)[jnp.arange(2), labels]
    _check(apply_op(op, None, (logits,), labels), expected, op.output_shape)
    # By hand for the first sample: log(sum(exp)) - logit of its label.
    row = np.asarray(logits[0], np.float64)
    np.testing.assert_allclose(float(apply_op(op, None, (logits,), labels)[0]),
                               np.log(np.exp(row).sum()) - row[3], rtol=1e-5)


@pytest.mark.parametrize("size, kernel, stride, padding", [(2, 3, 1, "SAME"), (4, 3, 2, "SAME"), (3, (1, 3), 2, "VALID"),
                                                           (5, (3, 1), 3, "SAME")])
def test_a_conv_on_a_small_image_is_patches_times_its_kernel(size, kernel, stride, padding):
    b = GraphBuilder("m", "toy", (2, size, size, 5))
    b.conv2d("c", 6, kernel=kernel, stride=stride, padding=padding, input=None)
    op = b.build(2).op("c")
    assert op.attrs.im2col and op.output_shape[1] * op.output_shape[2] <= 4 and "im2col" in op.cost_key
    assert local_op(op, (2, 1, 1, 2, 1)).attrs.im2col  # every task computes it so, and calibration times that
    params, inputs = _params(op, 3), _inputs(op, 4)
    plain = dataclasses.replace(op, attrs=dataclasses.replace(op.attrs, im2col=False))
    _check(apply_op(op, params, inputs), apply_op(plain, params, inputs), op.output_shape)
    grads = [jax.grad(lambda p, o=o: jnp.sum(apply_op(o, p, inputs) ** 2))(params) for o in (op, plain)]
    for name in params:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-4)


def test_a_conv_with_a_larger_output_is_a_plain_convolution():
    b = GraphBuilder("m", "toy", (2, 6, 6, 5))
    b.conv2d("c", 6, kernel=3, stride=2, input=None)
    assert not b.build(2).op("c").attrs.im2col  # a 3x3 output


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 3, 5), (6, 5)])
def test_batch_norm_backward_is_autodiff_of_its_formula(shape, relu):
    from models.kinds.batch_norm import EPSILON, batch_norm

    def by_formula(x, scale, bias):
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.maximum(jnp.mean(x * x, axis=axes) - mean * mean, 0.0)
        y = (x - mean) * lax.rsqrt(var + EPSILON) * scale + bias
        return jax.nn.relu(y) if relu else y

    x, scale, bias = _random(shape, 1), _random(shape[-1:], 2), _random(shape[-1:], 3)
    weights = _random(shape, 4)  # a cotangent that is not all ones
    ours = jax.grad(lambda *a: jnp.sum(batch_norm(*a, relu)[0] * weights), argnums=(0, 1, 2))(x, scale, bias)
    theirs = jax.grad(lambda *a: jnp.sum(by_formula(*a) * weights), argnums=(0, 1, 2))(x, scale, bias)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch_norm(x, scale, bias, relu)[0], by_formula(x, scale, bias), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_hw, kernel_hw, stride_hw", [((6, 4), (3, 3), (1, 1)), ((9, 5), (3, 3), (2, 2)),
                                                        ((7, 8), (1, 7), (1, 1)), ((11, 10), (3, 3), (2, 2)),
                                                        ((9, 5), (1, 1), (2, 2)), ((8, 9), (5, 5), (1, 1)),
                                                        ((8, 8), (3, 3), (2, 2))])
def test_a_halo_shard_conv_has_autodiffs_gradients_on_the_rows_it_owns(in_hw, kernel_hw, stride_hw):
    # A spatial shard's conv computes its input gradient for the rows and columns it owns only, as a
    # forward convolution (what XLA's SPMD partitioner has each device do in a step, fast on small
    # images); there it equals autodiff's, the halo's is zero; output and kernel gradient are autodiff's.
    import jax
    import numpy as np
    from jax import lax

    from models.kinds.conv import _halo_conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *in_hw, 5)).astype(np.float32)
    kernel = rng.standard_normal((*kernel_hw, 5, 4)).astype(np.float32)

    def plain(x, kernel):
        return lax.conv_general_dilated(x, kernel, stride_hw, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, pullback = jax.vjp(plain, x, kernel)
    halo_y, halo_pullback = jax.vjp(lambda x, k: _halo_conv(x, k, stride_hw), x, kernel)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(halo_y, y, rtol=1e-6)
    (dx, dkernel), (want_dx, want_dkernel) = halo_pullback(dy), pullback(dy)
    np.testing.assert_allclose(dkernel, want_dkernel, rtol=1e-5, atol=1e-5)
    owned = tuple(slice(max((k - s) // 2, 0), max((k - s) // 2, 0) + min(out * s, size - max((k - s) // 2, 0)))
                  for size, out, k, s in zip(in_hw, y.shape[1:3], kernel_hw, stride_hw))
    np.testing.assert_allclose(dx[:, owned[0], owned[1]], want_dx[:, owned[0], owned[1]], rtol=1e-5, atol=1e-5)
    halo = np.ones(dx.shape, bool)
    halo[:, owned[0], owned[1]] = False
    assert not np.any(np.asarray(dx)[halo])


def test_only_a_spatial_shard_of_a_conv_is_a_halo_op():
    from models.op import local_op
    from models.zoo import build_graph

    conv = build_graph("resnet18", "tiny-imagenet", 8).op("res4a_branch2b")
    assert local_op(conv, (1, 1, 2, 1, 1)).attrs.halo and "halo" in local_op(conv, (1, 1, 2, 1, 1)).cost_key
    assert not local_op(conv, (2, 1, 1, 1, 1)).attrs.halo and not local_op(conv, (1, 1, 1, 2, 1)).attrs.halo


@pytest.mark.parametrize("model", ["resnet18", "inception_v3"])
def test_every_spatial_shard_of_a_zoo_conv_computes_its_gradients(model):
    # Each conv's local op split in two on height, then on width, runs its forward and backward (the
    # programs calibration times) with the shapes autodiff gives; tiny batch, shapes as at full size.
    import jax

    from models.op import local_op
    from models.zoo import build_graph, default_dataset
    from simulator.measure import local_op_programs

    graph = build_graph(model, default_dataset(model), 1)
    shards = {local_op(op, tuple(int(name == label) + 1 for name in op.space.config_labels))
              for op in graph.ops if op.kind.value == "conv2d"
              for label in ("height", "width") if op.output_shape[1] >= 2 and op.output_shape[2] >= 2}
    for op in sorted(shards, key=lambda op: op.cost_key):
        programs = local_op_programs(op)
        output, pullback = jax.eval_shape(programs.forward_vjp, programs.params, programs.inputs)
        grads = jax.eval_shape(programs.backward, pullback, programs.cotangent)
        assert output.shape == op.output_shape
        differentiated = (programs.params, programs.inputs) if op.input_grad else (programs.params,)  # not the data
        assert [g.shape for g in jax.tree.leaves(grads)] == [a.shape for a in jax.tree.leaves(differentiated)]


def _input_channel_graph():
    """A conv (with bias, 3x3 SAME: a halo in height and width), a dense on pixels and a classifier dense,
    none with a fused ReLU: each may split its input channels."""
    b = GraphBuilder("cin", "toy", (2, 4, 4, 8))
    b.conv2d("conv", 6, kernel=3, relu=False)
    b.dense("pixels", 4, relu=False, pixels=True)
    b.flatten("flat")
    b.dense("fc", 3, relu=False)
    b.softmax_xent("loss")
    return b.build(2)


@pytest.mark.parametrize("name", ["conv", "pixels", "fc"])
def test_input_channel_tasks_add_up_to_the_whole_op_with_one_bias(name):
    """Every split of the op on 4 devices (input channels with the others), each task on its slices (its
    task_apply: the bias only where it holds the first input channels), partial sums added, is the op."""
    from tests.models.test_transformer_kinds import _inputs, _params, assembled
    from soap.space import enumerate_configs

    op = _input_channel_graph().op(name)
    params, inputs = _params(op, 1), _inputs(op, 2)
    whole = np.asarray(apply_op(op, params, inputs, None))
    contracting = sorted({c.degrees for c in enumerate_configs(op, 4) if c.degrees[-1] > 1})
    assert len(contracting) >= 3
    for degrees in contracting:
        np.testing.assert_allclose(assembled(op, degrees, params, inputs, None), whole, rtol=1e-5, atol=1e-5,
                                   err_msg=str(degrees))


def test_the_local_ops_of_splits_without_input_channels_keep_their_cost_keys():
    """Measured profiles are keyed by local ops' cost keys: every split on 4 devices of AlexNet, ResNet-18 and
    Inception-v3 (batch 8) that leaves the input channels whole computes the local ops it computed before
    convs and dense layers had an in_channel label (main at 4045004: 1148 keys, this digest)."""
    import hashlib

    from models.zoo import build_graph
    from soap.space import valid_degrees

    keys = set()
    for model, dataset in (("alexnet", "tiny-imagenet"), ("resnet18", "tiny-imagenet"), ("inception_v3", "imagenet-299")):
        for op in build_graph(model, dataset, 8).ops:
            for degrees in valid_degrees(op, 4):
                if op.space.degree_map(degrees).get("in_channel", 1) == 1:
                    keys.add(local_op(op, degrees).cost_key)
    assert len(keys) == 1148
    assert hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest() == \
        "3ed902b23ee6358fe615ee22530a8244f0a4dfb7be0d449c2a1abc24389ed31a"
