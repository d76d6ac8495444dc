"""The executable network of an operator graph: flax nnx layers built by walking `graph.ops`.

    params = init_params(graph, seed=0)               # op name -> {"kernel": ..., "bias": ...}
    runner = OpRunner.for_graph(graph)
    x = runner.apply(graph.op("conv1"), params, images)   # one op at a time (a caller may pin x's sharding)

The graph is the one source of truth for shapes: `Network` builds an `nnx.Conv` per conv2d op and an
`nnx.Linear` per dense op from the op's shapes and checks every parameter against `op.param_shapes`.
`OpRunner` runs those same layers on plain parameter dicts, one op at a time, so that a training step can
pin each op's output sharding and run a contiguous range of ops (a stage) as its own jitted program.
Each op's computation lives in `apply_op`, shared by `Network.__call__` and `OpRunner`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from models.errors import ShapeError
from models.graph import OpGraph
from models.op import Op, OpKind

# Op name -> {"kernel": array, "bias": array}, only for ops with weights.
Params = dict[str, dict[str, jax.Array]]
# How `apply_op` computes ops. Calibrated timings belong to one version (simulator.calibrate keys its
# cache by it): bump it whenever an op's computation changes, so that stale timings are measured again.
# 3: max_pool's own backward.
OPS_VERSION = 3


def op_layer(op: Op, rngs: nnx.Rngs) -> nnx.Module:
    """The nnx layer of an op with weights, sized from its input and output shapes (any op, also a task's
    local op); `Network` checks the op's param_shapes against it."""
    dtype = jnp.dtype(op.dtype)
    features_in, features_out = op.input_shapes[0][-1], op.output_shape[-1]
    if op.kind is OpKind.CONV2D:
        return nnx.Conv(features_in, features_out, op.kernel_hw, strides=op.stride_hw,
                        padding=op.padding.value, dtype=dtype, param_dtype=dtype, rngs=rngs)
    if op.kind is OpKind.DENSE:
        return nnx.Linear(features_in, features_out, dtype=dtype, param_dtype=dtype, rngs=rngs)
    raise ShapeError(f"op {op.name!r} of kind {op.kind.value} has parameters but only conv2d and dense ops "
                     f"carry weights; remove its param_shapes")


def _check_param_shapes(op: Op, layer: nnx.Module) -> None:
    built = {name: tuple(value.shape) for name, value in nnx.to_pure_dict(nnx.state(layer, nnx.Param)).items()}
    if built != dict(op.param_shapes):
        raise ShapeError(f"op {op.name!r}: the {type(layer).__name__} layer has parameters {built} but the graph "
                         f"says {dict(op.param_shapes)}; the layer and the op must be built from the same shapes")


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """x @ kernel + bias, as nnx.Linear computes it, with a backward that writes the kernel gradient in the
    kernel's own (in, out) orientation. Left to autodiff, XLA's SPMD partitioner (JAX 0.10.2, CPU) emits
    it as (out, in) and transposes it inside the update: on one core that made the update of a 4096x4096
    kernel take 170 ms instead of 38 ms, and a data-parallel AlexNet step 25% slower than its parts."""
    return x @ kernel + bias


def _dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)


def _dense_backward(residuals, dy):
    x, kernel = residuals
    return dy @ kernel.T, jnp.einsum("bi,bo->io", x, dy), jnp.sum(dy, axis=0)


dense.defvjp(_dense_forward, _dense_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: str) -> jax.Array:
    """nnx.max_pool of NHWC `x`, with a backward that gives each window's gradient to the window's first
    maximum in row-major order (as XLA's select-and-scatter does, bit for bit where the sums are exact)
    by a mask per window offset. XLA:CPU expands select-and-scatter into four int32 iota tensors, an
    argmax reduce-window and a scatter: 11.7 ms for AlexNet's pool1 on half a Tiny ImageNet batch on one
    core, 5.5 ms this way; 300 against 88 ms at Dogs vs Cats' 55x55."""
    return nnx.max_pool(x, window_shape=window, strides=strides, padding=padding)


def _max_pool_forward(x, window, strides, padding):
    y = max_pool(x, window, strides, padding)
    return y, (x, y)


def _max_pool_backward(window, strides, padding, residuals, dy):
    x, y = residuals
    (kh, kw), (sh, sw) = window, strides
    pads = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
    padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    n, height, width, channels = padded.shape
    _, out_h, out_w, _ = y.shape
    span_h, span_w = (out_h - 1) * sh + 1, (out_w - 1) * sw + 1
    dx = jnp.zeros_like(padded)
    taken = jnp.zeros(y.shape, bool)
    for i in range(kh):
        for j in range(kw):
            seen = lax.slice(padded, (0, i, j, 0), (n, i + span_h, j + span_w, channels), (1, sh, sw, 1))
            first = (seen == y) & ~taken
            taken = taken | first
            dx = dx + lax.pad(jnp.where(first, dy, 0).astype(dx.dtype), jnp.array(0, dx.dtype),
                              [(0, 0, 0), (i, height - i - span_h, sh - 1), (j, width - j - span_w, sw - 1), (0, 0, 0)])
    (top, _), (left, _) = pads
    return (dx[:, top:top + x.shape[1], left:left + x.shape[2], :],)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def apply_op(op: Op, layer: nnx.Module | None, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """What `op` computes on its input `x` (labels only for softmax_xent, which returns per-sample losses)."""
    if op.kind in (OpKind.CONV2D, OpKind.DENSE):
        y = dense(x, layer.kernel[...], layer.bias[...]) if op.kind is OpKind.DENSE else layer(x)
        return jax.nn.relu(y) if op.relu else y
    if op.kind is OpKind.POOL2D:
        return max_pool(x, op.kernel_hw, op.stride_hw, op.padding.value)
    if op.kind is OpKind.FLATTEN:
        return x.reshape(x.shape[0], -1)
    if op.kind is OpKind.SOFTMAX_XENT:
        return optax.losses.softmax_cross_entropy_with_integer_labels(x, labels)
    raise AssertionError(op.kind)


def _require_trainable_chain(graph: OpGraph) -> None:
    """The runtime passes each op's output to the next op in program order and trains on the last op's loss."""
    previous = ()
    for op in graph.ops:
        if graph.producers(op.name) != previous:
            raise ShapeError(f"op {op.name!r} of {graph.model} reads {list(graph.producers(op.name))} but the "
                             f"runtime runs chains only (each op reads the op before it); reorder the ops")
        previous = (op.name,)
    if graph.ops[-1].kind is not OpKind.SOFTMAX_XENT:
        raise ShapeError(f"the last op of {graph.model} is {graph.ops[-1].kind.value} {graph.ops[-1].name!r}; "
                         f"training needs a softmax_xent loss last: end the model with one")


def loss_op(graph: OpGraph) -> Op:
    """The op whose per-sample losses a step averages (the last op of a trainable chain)."""
    return graph.ops[-1]


class Network(nnx.Module):
    """The nnx module of an operator graph: one layer per op with weights, run in program order."""

    def __init__(self, graph: OpGraph, rngs: nnx.Rngs):
        _require_trainable_chain(graph)
        self.ops = graph.ops
        self.layers = nnx.Dict({op.name: op_layer(op, rngs) for op in graph.ops if op.param_shapes})
        for op in graph.ops:
            if op.param_shapes:
                _check_param_shapes(op, self.layers[op.name])

    def __call__(self, images: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-sample losses of a batch (the step's loss is their mean)."""
        x = images
        for op in self.ops:
            x = apply_op(op, self.layers[op.name] if op.param_shapes else None, x, labels)
        return x


def init_params(graph: OpGraph, seed: int) -> Params:
    """The network's initial parameters (flax's default initializers), the same for the same seed."""
    return _init_params(graph, seed)


# One compiled program per graph (the seed is traced). The "rbg" generator compiles in about half the
# time of the default threefry (AlexNet: 2.6 s against 5.8 s on one core), and it is deterministic too.
@functools.partial(jax.jit, static_argnums=0)
def _init_params(graph: OpGraph, seed: jax.Array) -> Params:
    rngs = nnx.Rngs(jax.random.key(seed, impl="rbg"))
    return nnx.to_pure_dict(nnx.state(Network(graph, rngs), nnx.Param))["layers"]


@dataclass(frozen=True)
class OpRunner:
    """Runs the ops of a graph one at a time on plain parameter dicts, through `Network`'s layers."""

    graph: OpGraph
    layer_defs: Mapping[str, nnx.GraphDef]

    @classmethod
    def for_graph(cls, graph: OpGraph) -> OpRunner:
        # An abstract network (shapes only, no arrays) gives each layer's structure without initializing it.
        abstract = nnx.eval_shape(lambda: Network(graph, nnx.Rngs(0)))
        return cls(graph, {name: nnx.graphdef(layer) for name, layer in abstract.layers.items()})

    def apply(self, op: Op, params: Params, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """`op` on `x`, with its weights taken from `params[op.name]` (the other entries are not read)."""
        layer = nnx.merge(self.layer_defs[op.name], params[op.name]) if op.name in self.layer_defs else None
        return apply_op(op, layer, x, labels)
