"""The executable network of an operator graph: flax nnx layers built by walking `graph.ops`.

    params = init_params(graph, seed=0)               # op name -> {"kernel": ..., "bias": ...}
    losses = Network(graph, nnx.Rngs(0))(images, labels)  # the graph as one flax module
    y = apply_op(graph.op("conv1"), params["conv1"], (images,))   # one op (a step may pin y's sharding)

The graph is the one source of truth for shapes: `Network` builds each op's layer from its kind's
registry entry (models.kinds: nnx.Conv for conv2d, nnx.Linear for dense, nnx.BatchNorm for batch_norm)
and checks every parameter against `op.param_shapes`. Each op's computation is its kind's `apply` on
plain parameter dicts, so that a training step (soap.step) can run one op at a time, pin each op's
output sharding and run a range of ops (a stage) as its own jitted program.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from models.errors import ShapeError
from models.graph import OpGraph
from models.op import Op

# Op name -> {"kernel": array, "bias": array} (or scale and bias), only for ops with weights.
Params = dict[str, dict[str, jax.Array]]
# How the kinds' `apply` computes ops. Calibrated timings belong to one version (simulator.calibrate keys
# its cache by it): bump it whenever an op's computation changes, so that stale timings are measured again.
# 3: max_pool's own backward. 4: batch norm's own backward, im2col convs on small images, ops timed writing
# fresh memory against a random output gradient (simulator.measure). 5: the forward and backward timed
# with the forward's output kept (a conv's forward was left out of it). 6: each op's optimizer update
# timed with it, at its own parameter size. 7: workers keep the memory they free (soap.join), so an op's
# scratch buffers stop paying page faults on every call. 8: attention on [b h s k] (batched matmuls), dropout
# drawing per-step keys, each op's forward timed with the residuals its backward reads (simulator.measure).
OPS_VERSION = 8


def own_param_shapes(op: Op) -> dict[str, tuple[int, ...]]:
    """The op's parameters that it owns: all but those tied to another op's weight (`Op.tied`)."""
    tied = {name for name, _ in op.tied}
    return {name: shape for name, shape in op.param_shapes if name not in tied}


def op_layer(op: Op, rngs: nnx.Rngs) -> nnx.Module | None:
    """The nnx layer that initializes the parameters an op owns (any op, also a task's local op), or None."""
    return op.spec.layer(op, rngs) if own_param_shapes(op) else None


def op_params(op: Op, params: Params) -> dict[str, jax.Array] | None:
    """What `apply_op` takes for `op` from every op's own parameters: its own, and each tied weight from
    its owner (the owner's parameter of the same name: GPT-2's head reads wte's "embedding")."""
    if not op.param_shapes:
        return None
    return {**params.get(op.name, {}), **{name: params[owner][name] for name, owner in op.tied}}


def layer_params(layer: nnx.Module) -> dict[str, jax.Array]:
    """A layer's trainable parameters as a dict of arrays (what `apply_op` takes)."""
    return nnx.to_pure_dict(nnx.state(layer, nnx.Param))


def apply_op(op: Op, params: Mapping[str, jax.Array] | None, inputs: tuple[jax.Array, ...],
             labels: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
    """What `op` computes on its inputs with its parameters (labels only for the loss, which returns
    per-sample losses; `key` only for a random op, the step's models.keys.step_key, default step 0 of seed 0)."""
    return op.spec.apply_keyed(op, params, inputs, labels, key)


def _check_param_shapes(op: Op, layer: nnx.Module) -> None:
    built = {name: tuple(value.shape) for name, value in nnx.to_pure_dict(nnx.state(layer, nnx.Param)).items()}
    if built != own_param_shapes(op):
        raise ShapeError(f"op {op.name!r}: the {type(layer).__name__} layer has parameters {built} but the graph "
                         f"says {own_param_shapes(op)}; the layer and the op must be built from the same shapes")


def loss_op(graph: OpGraph) -> Op:
    """The op whose per-sample losses a step averages (the last op)."""
    return graph.ops[-1]


def require_loss_last(graph: OpGraph) -> None:
    last = graph.ops[-1]
    if not last.spec.reads_labels or graph.consumers(last.name):
        raise ShapeError(f"the last op of {graph.model} is {last.kind.value} {last.name!r}; training needs a "
                         f"loss last (softmax_xent, token_xent): end the model with one")


class Network(nnx.Module):
    """The nnx module of an operator graph: one layer per op with weights, run in program order."""

    def __init__(self, graph: OpGraph, rngs: nnx.Rngs):
        require_loss_last(graph)
        self.ops = graph.ops
        self.producers = {op.name: graph.producers(op.name) for op in graph.ops}
        self.layers = nnx.Dict({op.name: op_layer(op, rngs) for op in graph.ops if own_param_shapes(op)})
        for op in graph.ops:
            if own_param_shapes(op):
                _check_param_shapes(op, self.layers[op.name])

    def __call__(self, images: jax.Array, labels: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Per-sample (per-token) losses of a batch (the step's loss is their mean); `images` is the data
        batch, token ids for a token model; `key` the step's (models.keys.step_key; default step 0 of seed 0)."""
        own = {name: layer_params(layer) for name, layer in self.layers.items()}
        values: dict[str, jax.Array] = {}
        for op in self.ops:
            inputs = tuple(values[p] for p in self.producers[op.name]) or (images,)
            values[op.name] = apply_op(op, op_params(op, own), inputs, labels, key)
        return values[self.ops[-1].name]


def module_with(graph: OpGraph, params: Params) -> Network:
    """The graph's flax module holding `params` (its structure from an abstract module: nothing is
    initialized; batch norm's running averages, which training mode does not read, start at zero)."""
    abstract = nnx.eval_shape(lambda: Network(graph, nnx.Rngs(0)))
    graphdef, _, others = nnx.split(abstract, nnx.Param, ...)
    others = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), others)
    return nnx.merge(graphdef, {"layers": params}, others)


def init_state(graph: OpGraph) -> dict[str, dict[str, np.ndarray]]:
    """Every op's initial non-trainable state (batch norm: running mean 0, running variance 1)."""
    return {op.name: op.spec.init_state(op) for op in graph.ops if op.state_shapes}


def init_params(graph: OpGraph, seed: int) -> Params:
    """The network's initial parameters (flax's default initializers), the same for the same seed."""
    return _init_params(graph, seed)


# One compiled program per graph (the seed is traced). The "rbg" generator compiles in about half the
# time of the default threefry (AlexNet: 2.6 s against 5.8 s on one core), and it is deterministic too.
@functools.partial(jax.jit, static_argnums=0)
def _init_params(graph: OpGraph, seed: jax.Array) -> Params:
    rngs = nnx.Rngs(jax.random.key(seed, impl="rbg"))
    return nnx.to_pure_dict(nnx.state(Network(graph, rngs), nnx.Param))["layers"]
