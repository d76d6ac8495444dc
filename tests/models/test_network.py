"""The executable network: layers built from the graph's shapes, and each op's computation by hand."""

import dataclasses

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.errors import ShapeError
from models.graph import GraphBuilder, OpGraph
from models.kinds.dense import DenseAttrs
from models.kinds.pool import max_pool
from models.network import Network, apply_op, init_params, layer_params, op_layer
from models.op import Op, OpKind, Padding, local_op


def _toy_graph(batch=4) -> OpGraph:
    """Every op kind, small: conv SAME stride 2, pool, conv VALID, flatten, dense, dense without ReLU, loss."""
    b = GraphBuilder("toy", "toy", (batch, 12, 12, 3))
    b.conv2d("conv_same", 8, kernel=3, stride=2)
    b.pool2d("pool")
    b.conv2d("conv_valid", 4, kernel=2, padding=Padding.VALID)
    b.flatten("flatten")
    b.dense("fc", 6)
    b.dense("logits", 5, relu=False)
    b.softmax_xent("loss")
    return b.build(batch)


def _conv(x, kernel, bias, stride, padding):
    y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


def _by_hand(params, images, labels):
    """The toy graph written out with lax: the semantics the ops must have."""
    x = jax.nn.relu(_conv(images, params["conv_same"]["kernel"], params["conv_same"]["bias"], 2, "SAME"))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
    x = jax.nn.relu(_conv(x, params["conv_valid"]["kernel"], params["conv_valid"]["bias"], 1, "VALID"))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc"]["kernel"] + params["fc"]["bias"])
    logits = x @ params["logits"]["kernel"] + params["logits"]["bias"]
    return -jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels]


def _module_with(graph, params) -> Network:
    """The nnx module of `graph` holding `params` (its structure from an abstract, uninitialized module)."""
    abstract = nnx.eval_shape(lambda: Network(graph, nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), {"layers": params})


def test_every_op_kind_computes_what_the_graph_says():
    graph = _toy_graph()
    params = init_params(graph, seed=3)
    images, labels = synthetic_batch(graph, seed=3)
    module_losses = jax.jit(lambda p: _module_with(graph, p)(images, labels))(params)
    np.testing.assert_allclose(module_losses, jax.jit(_by_hand)(params, images, labels), rtol=1e-5, atol=1e-6)


def test_op_by_op_equals_the_module_and_shapes_match_the_graph():
    graph = _toy_graph()
    params = init_params(graph, seed=0)
    images, labels = synthetic_batch(graph, seed=0)
    x = images
    for op in graph.ops:
        x = apply_op(op, params.get(op.name), (x,), labels)
        assert x.shape == op.output_shape, op.name
    np.testing.assert_allclose(x, _module_with(graph, params)(images, labels), rtol=1e-6)


def test_alexnet_parameters_have_the_ops_shapes_and_depend_only_on_the_seed(reference):
    graph = reference.graph
    params = init_params(graph, seed=0)
    assert {name: {k: v.shape for k, v in entry.items()} for name, entry in params.items()} == \
        {op.name: dict(op.param_shapes) for op in graph.ops if op.param_shapes}
    again, other = init_params(graph, seed=0), init_params(graph, seed=1)
    np.testing.assert_array_equal(params["conv1"]["kernel"], again["conv1"]["kernel"])
    assert not np.array_equal(params["conv1"]["kernel"], other["conv1"]["kernel"])


def test_dense_relu_flag_is_honoured():
    op = Op("d", OpKind.DENSE, ((2, 3),), (2, 2), (("kernel", (3, 2)), ("bias", (2,))), attrs=DenseAttrs(relu=False))
    params = layer_params(nnx.Linear(3, 2, kernel_init=nnx.initializers.ones, rngs=nnx.Rngs(0)))
    x = -jnp.ones((2, 3))
    np.testing.assert_array_equal(apply_op(op, params, (x,)), -3 * np.ones((2, 2)))
    np.testing.assert_array_equal(apply_op(dataclasses.replace(op, attrs=DenseAttrs(relu=True)),
                                           params, (x,)), np.zeros((2, 2)))


def _graph_with(ops, edges) -> OpGraph:
    g = nx.DiGraph()
    for op, inputs in ops:
        g.add_node(op.name, op=op, inputs=inputs)
    g.add_edges_from(edges)
    return OpGraph("hand", "toy", 2, g)


def test_a_layer_whose_shapes_differ_from_the_op_is_refused():
    # in 3 features but the op's kernel says 4: the layer would be built (3, 2), not (4, 2).
    bad = Op("fc", OpKind.DENSE, ((2, 3),), (2, 2), (("kernel", (4, 2)), ("bias", (2,))))
    loss = Op("loss", OpKind.SOFTMAX_XENT, ((2, 2),), (2,))
    with pytest.raises(ShapeError, match=r"op 'fc': the Linear layer has parameters \{'bias': \(2,\), 'kernel': "
                                         r"\(3, 2\)\} but the graph says \{'kernel': \(4, 2\), 'bias': \(2,\)\}"):
        Network(_graph_with([(bad, ()), (loss, ("fc",))], [("fc", "loss")]), nnx.Rngs(0))


def test_a_graph_without_a_loss_last_is_refused():
    b = GraphBuilder("headless", "toy", (2, 8, 8, 3))
    b.conv2d("a", 4, kernel=3)
    with pytest.raises(ShapeError, match=r"the last op of headless is conv2d 'a'; training needs a loss last "
                                         r"\(softmax_xent, token_xent\)"):
        Network(b.build(2), nnx.Rngs(0))


def test_the_layer_of_a_task_local_op_holds_its_weight_slice(reference):
    local = local_op(reference.graph.op("conv2"), (2, 1, 1, 4, 1))  # 192 output channels split in 4
    params = layer_params(op_layer(local, nnx.Rngs(0)))
    assert {k: v.shape for k, v in params.items()} == dict(local.param_shapes)
    assert apply_op(local, params, (jnp.ones(local.input_shapes[0]),)).shape == local.output_shape


@pytest.mark.parametrize("shape, window, strides, padding", [
    ((4, 13, 13, 3), (3, 3), (2, 2), "VALID"),  # AlexNet's pools
    ((4, 16, 16, 3), (3, 3), (2, 2), "SAME"),
    ((2, 9, 11, 2), (2, 3), (1, 2), "SAME"),
    ((2, 7, 7, 2), (3, 3), (3, 3), "VALID"),
])
def test_max_pool_gradient_is_xla_select_and_scatter_bit_for_bit(shape, window, strides, padding):
    # Small integers: many windows with tied maxima, and every gradient sum exact in float32.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(-2, 3, shape), jnp.float32)
    reference = lambda x: nnx.max_pool(x, window_shape=window, strides=strides, padding=padding)  # noqa: E731
    y, pullback = jax.vjp(reference, x)
    dy = jnp.asarray(rng.integers(-5, 5, y.shape), jnp.float32)
    ours, our_pullback = jax.vjp(lambda x: max_pool(x, window, strides, padding), x)
    np.testing.assert_array_equal(ours, y)
    np.testing.assert_array_equal(our_pullback(dy)[0], pullback(dy)[0])
