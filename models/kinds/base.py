"""`KindSpec`: what every op kind declares, with the defaults of an element-wise op.

One subclass per kind (or small family) lives in its own module beside this one and is registered in
models/kinds/__init__.py. The simulator, the space, the lowering, the runtime and calibration ask these
methods instead of branching on kinds; a new kind (embedding, layer_norm, attention, ...) is a new module.

- `output_dims` / `parallel_dims`: the dims of the output tensor and which of them a config may split.
- `param_dims`: the output dims whose split also splits the parameters (replicas of one parameter slice
  all-reduce their gradients); `param_split(op, shape)`: which of them splits each axis of a parameter;
  `partial_input_gradient`: whether a task's input gradient is a partial sum that the step all-reduces
  over the tasks that differ only in their index on the param dims (a dense or conv split on its outputs);
  `stats_dims` / `stats_bytes`: the dims the op's statistics reduce over, and the bytes of one task's
  statistics, all-reduced in the forward and again in the backward over the tasks that differ only in
  their index on those dims, when the split divides one of them (batch norm: every dim but the channels).
- `forward_flops` / `backward_flops`: one multiply-add = 2 FLOPs, bias and ReLU not counted.
- `input_boxes(op, out_box)`: the box of each input that computing `out_box` reads (halo included);
  `task_input_boxes` what a task reads at run time where that is more; `input_split` the same at the
  level of a sharding (which output split each input dim carries).
- `local_op(op, degrees)`: the name-less op one task computes; its cost_key keys measured profiles.
- `init_state(op)` / `apply_with_state(...)`: the op's initial non-trainable state, and its computation
  in a training step that also returns the new state (batch norm's running averages).
- `layer(op, rngs)`: the nnx module that initializes the op's parameters (flax's default initializers;
  None without); `apply(op, params, inputs, labels)`: the op's JAX computation on its inputs, its
  parameters a dict of arrays named as `param_shapes` names them (None without).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from models.op import Box, Dim, Op, OpKind, shard_shape

_DIMS_BY_RANK = {
    4: (Dim.SAMPLE, Dim.HEIGHT, Dim.WIDTH, Dim.CHANNEL),
    2: (Dim.SAMPLE, Dim.CHANNEL),
    1: (Dim.SAMPLE,),
}


class KindSpec:
    kind: OpKind
    # Krizhevsky's rule (the `owt` baseline): fully-connected layers split on their channels, others on the batch.
    fully_connected = False
    # The op reads the labels beside its inputs (the loss).
    reads_labels = False

    def output_dims(self, op: Op) -> tuple[Dim, ...]:
        return _DIMS_BY_RANK[len(op.output_shape)]

    def parallel_dims(self, op: Op) -> frozenset[Dim]:
        return frozenset(self.output_dims(op))

    def param_dims(self, op: Op) -> frozenset[Dim]:
        return frozenset({Dim.CHANNEL}) & frozenset(self.output_dims(op))

    def param_split(self, op: Op, shape: tuple[int, ...]) -> tuple[Dim | None, ...]:
        """The output dim splitting each axis of a parameter of `shape`: the last axis by the channels."""
        last = Dim.CHANNEL if Dim.CHANNEL in self.param_dims(op) else None
        return (None,) * (len(shape) - 1) + (last,)

    def partial_input_gradient(self, op: Op, degrees: tuple[int, ...]) -> bool:
        return False

    def stats_dims(self, op: Op) -> frozenset[Dim]:
        return frozenset()

    def stats_bytes(self, op: Op, degrees: tuple[int, ...]) -> int:
        return 0

    def forward_flops(self, op: Op) -> int:
        return 0

    def backward_flops(self, op: Op) -> int:
        return self.forward_flops(op)

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        return tuple(out_box for _ in op.input_shapes)

    def task_input_boxes(self, op: Op, degrees: tuple[int, ...], out_box: Box) -> tuple[Box, ...]:
        return self.input_boxes(op, out_box)

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        """For each input, what each of its dims is split by (an entry of the output's split, or None)."""
        return tuple(tuple(output_split) for _ in op.input_shapes)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        out = shard_shape(op.output_shape, degrees)
        inputs = tuple(shard_shape(shape, degrees) for shape in op.input_shapes)
        return dataclasses.replace(op, name="", input_shapes=inputs, output_shape=out,
                                   param_shapes=_split_last(op.param_shapes, degrees[-1]),
                                   state_shapes=_split_last(op.state_shapes, degrees[-1]))

    def layer(self, op: Op, rngs):
        return None

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels: jax.Array | None) -> jax.Array:
        raise NotImplementedError(self.kind)

    def apply_with_state(self, op: Op, params, state, inputs: tuple[jax.Array, ...],
                         labels: jax.Array | None) -> tuple[jax.Array, dict | None]:
        """`apply` in a training step: the output and the op's new state (None for an op without state)."""
        return self.apply(op, params, inputs, labels), None

    def init_state(self, op: Op) -> dict[str, np.ndarray]:
        return {}


def elements(shape) -> int:
    return math.prod(shape)


def _split_last(shapes: tuple, degree: int) -> tuple:
    """Named shapes with their last dim (the channels a channel split divides) divided by `degree`."""
    return tuple((name, shape[:-1] + (shape[-1] // degree,)) for name, shape in shapes)


def split_params(op: Op, degree: int) -> tuple:
    return _split_last(op.param_shapes, degree)


def batch_only(op: Op, output_split: tuple) -> tuple[tuple, ...]:
    """Every input split on its batch like the output, whole on its other dims."""
    return tuple((output_split[0],) + (None,) * (len(shape) - 1) for shape in op.input_shapes)


def relu_if(op: Op, y: jax.Array) -> jax.Array:
    return jax.nn.relu(y) if op.relu else y
