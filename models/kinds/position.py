"""add_position: learned positions, y[sample sequence hidden] = x[sample sequence hidden] + table[:s] (GPT-2's
wpe, BERT's position embedding).

The table has the model's context rows (GPT-2: 1024, also when it runs sequences of 128); the op reads its
first s. Its parameter is named "embedding", as flax's nnx.Embed names it (whose initializer it takes).
FLOPs: forward = backward = elements (one add; the backward's sum of the output gradient over the
samples into the table's rows). Worked number: 8 sequences of 1024 tokens, width 768 -> 6.3 MFLOP.

Samples, sequence and hidden split like any element-wise op; the table's position label is never split
(its rows are read at the task's own positions). A task of a sequence split adds the table's rows from its
first position (`task_apply`); its local op, which calibration times, adds as many rows.
"""

from __future__ import annotations

import jax
from flax import nnx

from models.kinds.base import KindSpec, elements, tensor_labels, token_replicas
from models.labels import Label, Role, Space, label_ranges
from models.op_value import Op, OpKind


class AddPosition(KindSpec):
    kind = OpKind.ADD_POSITION

    def forward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def space(self, op: Op) -> Space:
        """x[sample sequence hidden] + table[position hidden] -> y[sample sequence hidden]."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        positions = Label("position", op.param_shapes[0][1][0], Role.SEQUENCE)
        return token_replicas(Space(labels + (positions,), names, (names,), (("embedding", ("position", "hidden")),)))

    def layer(self, op: Op, rngs):
        positions, hidden = op.param_shapes[0][1]
        return nnx.Embed(positions, hidden, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        return x + params["embedding"][:x.shape[1]]

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        first = label_ranges(op.space, degrees, index)["sequence"][0]
        return self.apply(op, {"embedding": params["embedding"][first:]}, inputs, labels)
