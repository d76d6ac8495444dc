"""class_token and first_token: ViT's learned class token, put before the patch tokens and read out at the
end.

    class_token: y[b (1 + s) d] = concat(cls[d] for every sample, x[b s d])     (parameter "cls", zeros)
    first_token: y[b d] = x[b 0 d]

FLOPs 0 (copies). Samples and hidden split; the sequence does not (a shard of 1 + s tokens would hold the
class token or not: 197 tokens do not split evenly anyway). first_token's task reads every token of its
samples (the box of a label the output does not carry is whole): a sequence-split producer sends it
more than the one token it uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.kinds.base import KindSpec
from models.labels import Label, Part, Role, Space
from models.op_value import Op, OpKind


class ClassToken(KindSpec):
    kind = OpKind.CLASS_TOKEN

    def space(self, op: Op) -> Space:
        """x[sample part(sequence, 1, s) hidden], cls[hidden] -> y[sample sequence hidden]."""
        batch, tokens, hidden = op.output_shape
        labels = (Label("sample", batch, Role.SAMPLE), Label("sequence", tokens, Role.SEQUENCE),
                  Label("hidden", hidden, Role.HIDDEN))
        return Space(labels, ("sample", "sequence", "hidden"), (("sample", Part("sequence", 1, tokens - 1), "hidden"),),
                     (("cls", ("hidden",)),), splittable=frozenset({"sample", "hidden"}))

    def layer(self, op: Op, rngs):
        return ClassTokenParam(op.output_shape[-1], op.dtype)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        cls = jnp.broadcast_to(params["cls"], (x.shape[0], 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1)


class ClassTokenParam(nnx.Module):
    def __init__(self, hidden: int, dtype: str):
        self.cls = nnx.Param(jnp.zeros((hidden,), dtype))  # ViT's initializer


class FirstToken(KindSpec):
    kind = OpKind.FIRST_TOKEN

    def space(self, op: Op) -> Space:
        """x[sample sequence channel] -> y[sample channel], token 0."""
        batch, tokens, hidden = op.input_shapes[0]
        labels = (Label("sample", batch, Role.SAMPLE), Label("channel", hidden, Role.CHANNEL),
                  Label("sequence", tokens, Role.SEQUENCE))
        return Space(labels, ("sample", "channel"), (("sample", "sequence", "channel"),))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return inputs[0][:, 0]
