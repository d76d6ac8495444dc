"""add_token_type: BERT's token-type (segment) embedding, y[b s d] = x[b s d] + table[type[b s], d].

The tokens dataset has one segment, so every type id is 0 (as BERT implementations default when a batch
gives no type ids) and the op adds the table's row 0 to every token; the table keeps its published rows
(2 for BERT) and its parameters. Its parameter is named "embedding", as flax's nnx.Embed names it.
FLOPs: forward = backward = elements (one add; the backward's sum of the output gradient into row 0).
Worked number: BERT-base, 8 sequences of 512 tokens, width 768 -> 3.1 MFLOP.

Samples, sequence and hidden split like any element-wise op; the table's type label is never split.
"""

from __future__ import annotations

import jax
from flax import nnx

from models.kinds.base import KindSpec, elements, tensor_labels
from models.labels import Label, Role, Space
from models.op_value import Op, OpKind


class AddTokenType(KindSpec):
    kind = OpKind.ADD_TOKEN_TYPE

    def forward_flops(self, op: Op) -> int:
        return elements(op.output_shape)

    def space(self, op: Op) -> Space:
        """x[sample sequence hidden] + table[token_type hidden][0] -> y[sample sequence hidden]."""
        labels = tensor_labels(op.output_shape)
        names = tuple(label.name for label in labels)
        types = Label("token_type", op.param_shapes[0][1][0], Role.VOCAB)
        return Space(labels + (types,), names, (names,), (("embedding", ("token_type", "hidden")),))

    def layer(self, op: Op, rngs):
        types, hidden = op.param_shapes[0][1]
        return nnx.Embed(types, hidden, dtype=op.dtype, param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return inputs[0] + params["embedding"][0]
