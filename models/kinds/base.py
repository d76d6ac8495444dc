"""`KindSpec`: what every op kind declares: its labelled iteration space, FLOPs and JAX computation.

One subclass per kind (or small family) lives in its own module beside this one and is registered in
models/kinds/__init__.py. The simulator, the space, the lowering, the runtime and calibration ask the
kind's labelled space (models.labels) instead of branching on kinds; a new kind is a new module.

- `space(op)`: the op's computation over labelled dims (models.labels.Space): which labels each input,
  parameter, state array and the output carry, which a config may split, what its statistics reduce
  over. Boxes, shards, shardings, replica and partial-sum groups and the local op all derive from it.
- `stats_bytes(op, degrees)`: the bytes of one task's statistics, all-reduced in the forward and again in
  the backward over the tasks that differ only on the labels the statistics reduce over, when the split
  divides one of them (batch norm).
- `forward_flops` / `backward_flops`: one multiply-add = 2 FLOPs, bias and ReLU not counted.
- `local_op(op, degrees)`: the name-less op one task computes, shapes from the labels; its cost_key keys
  measured profiles. A split of a windowed label makes it a VALID window with its halo (its attrs' `halo`).
- `init_state(op)` / `apply_with_state(...)`: the op's initial non-trainable state, and its computation
  in a training step that also returns the new state (batch norm's running averages).
- `apply_keyed(op, params, inputs, labels, key)`: `apply` with the step's random key (models.network.
  step_key), which only a random kind reads (dropout: its masks); every other kind ignores it.
- `layer(op, rngs)`: the nnx module that initializes the op's parameters (flax's default initializers;
  None without); `apply(op, params, inputs, labels)`: the op's JAX computation on its inputs, its
  parameters a dict of arrays named as `param_shapes` names them (None without).
- `task_apply(op, degrees, index, params, inputs, labels)`: what task `index` of a split computes on its
  slices (its local op's `apply`; a kind whose task needs its offset in a label says how: a vocabulary
  shard's lookup, a sequence shard's positions and causal mask).
- `input_dtypes(op)`: the dtype of each input (the op's dtype; token ids are int32); `ids_bound(op)`: how
  many ids an int32 input ranges over (calibration draws them from 0 up to it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from models.labels import (Label, Role, Space, label_ranges, local_input_shape, local_shape, replicated,
                           splits_window)
from models.op_value import FlatFields, KindAttrs, Op, OpKind, Padding

_ROLES_BY_RANK = {
    4: (Role.SAMPLE, Role.HEIGHT, Role.WIDTH, Role.CHANNEL),
    3: (Role.SAMPLE, Role.SEQUENCE, Role.HIDDEN),
    2: (Role.SAMPLE, Role.CHANNEL),
    1: (Role.SAMPLE,),
}


def tensor_labels(shape: tuple[int, ...]) -> tuple[Label, ...]:
    """The labels of an NHWC image, a [b s d] token tensor, an (N, C) matrix or an (N,) vector, named by
    their roles."""
    return tuple(Label(role.value, size, role) for role, size in zip(_ROLES_BY_RANK[len(shape)], shape))


def token_replicas(space: Space) -> Space:
    """`space` with a replica label where it computes on [b s d] token tensors (models.labels.replicated):
    Megatron computes layer norms, dropout, residual adds and GELU whole on every rank of a group. Image
    and matrix ops keep the spaces the CNN strategies were searched in."""
    return replicated(space) if len(space.output) == 3 and space.output[-1] == "hidden" else space


def channel_arrays(shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per-channel arrays (batch norm's scale, bias, running statistics): each carries the channel label."""
    return tuple((name, ("channel",)) for name, _ in shapes)


class KindSpec:
    kind: OpKind
    # Krizhevsky's rule (the `owt` baseline): fully-connected layers split on their channels, others on the batch.
    fully_connected = False
    # The op reads the labels beside its inputs (the loss).
    reads_labels = False
    # The frozen dataclass of the kind's attributes (Op.attrs, a models.op_value.KindAttrs), or None for a kind
    # without.
    attrs_type = None

    def space(self, op: Op) -> Space:
        """Element-wise by default: every input carries the output's labels (on tokens, with replicas)."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        return token_replicas(Space(labels, names, tuple(names for _ in op.input_shapes)))

    def stats_bytes(self, op: Op, degrees: tuple[int, ...]) -> int:
        return 0

    def forward_flops(self, op: Op) -> int:
        return 0

    def backward_flops(self, op: Op) -> int:
        return self.forward_flops(op)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        space = op.space
        attrs = (dataclasses.replace(op.attrs, padding=Padding.VALID, halo=True) if splits_window(space, degrees)
                 else op.attrs)
        return dataclasses.replace(
            op, name="", input_shapes=tuple(local_input_shape(space, degrees, j) for j in range(len(op.input_shapes))),
            output_shape=local_shape(space, degrees, space.output),
            param_shapes=tuple((name, local_shape(space, degrees, names)) for name, names in space.params),
            state_shapes=tuple((name, local_shape(space, degrees, names)) for name, names in space.state), attrs=attrs)

    def input_dtypes(self, op: Op) -> tuple[str, ...]:
        """The dtype of each input: the op's own (a kind reading token ids says int32)."""
        return (op.dtype,) * len(op.input_shapes)

    def ids_bound(self, op: Op) -> int:
        """How many token ids the op's int32 input ranges over; only a kind that reads ids has one."""
        raise NotImplementedError(f"{self.kind.value} reads no token ids")

    def layer(self, op: Op, rngs):
        return None

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels: jax.Array | None) -> jax.Array:
        raise NotImplementedError(self.kind)

    def task_apply(self, op: Op, degrees: tuple[int, ...], index: tuple[int, ...], params,
                   inputs: tuple[jax.Array, ...], labels: jax.Array | None) -> jax.Array:
        """What task `index` (its shard index per config label) computes on its slices of the inputs and
        parameters: a partial sum where `models.labels.output_partial`; statistics are the task's own (their
        all-reduce is the simulator's and the runtime's, `stats_bytes`)."""
        return self.apply(self.local_op(op, degrees), params, inputs, labels)

    def apply_keyed(self, op: Op, params, inputs: tuple[jax.Array, ...], labels: jax.Array | None,
                    key: jax.Array | None) -> jax.Array:
        """`apply` in a step whose random key is `key` (None: step 0 of seed 0); only random kinds read it."""
        return self.apply(op, params, inputs, labels)

    def apply_with_state(self, op: Op, params, state, inputs: tuple[jax.Array, ...],
                         labels: jax.Array | None, key: jax.Array | None = None) -> tuple[jax.Array, dict | None]:
        """`apply_keyed` in a training step: the output and the op's new state (None for an op without state)."""
        return self.apply_keyed(op, params, inputs, labels, key), None

    def init_state(self, op: Op) -> dict[str, np.ndarray]:
        return {}


def contracting_splits(op: Op, outputs: tuple[str, ...], contracted: str) -> frozenset[str]:
    """The labels a config of a contraction (dense, conv) may split: its output's, and the `contracted`
    label (each task then holds a partial sum of the output) unless a ReLU is fused, which cannot act on a
    partial sum."""
    return frozenset(outputs) | (frozenset() if op.attrs.relu else {contracted})


def bias_once(op: Op, degrees: tuple[int, ...], index: tuple[int, ...], params, contracted: str):
    """A task's parameters with a zero bias where it does not hold the first shard of the `contracted`
    label: the partial sums of the output then add up to one bias (Megatron's row-parallel dense)."""
    if params is None or "bias" not in params:
        return params
    if label_ranges(op.space, degrees, index).get(contracted, (0, 0))[0] == 0:
        return params
    return {**params, "bias": jnp.zeros_like(params["bias"])}


def elements(shape) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class ReluAttrs(KindAttrs):
    """The attributes of batch_norm and add: a fused ReLU or not (conv2d's ConvAttrs and dense's DenseAttrs
    have their own)."""

    relu: bool = False

    def flat(self) -> FlatFields:
        return FlatFields(relu=self.relu)

    @classmethod
    def from_flat(cls, flat: FlatFields) -> ReluAttrs:
        return cls(flat.relu)


def relu_if(op: Op, y: jax.Array) -> jax.Array:
    """`y` through the op's fused ReLU, if it has one (its attrs say)."""
    return jax.nn.relu(y) if op.attrs.relu else y
