"""attend: an output head that reads a token table, logits[b s v] = x[b s d] . embedding[v d] (+ bias[v]),
as flax's nnx.Embed.attend computes it (GPT-2's head, tied to wte; BERT's masked-LM decoder, with its bias).

FLOPs: forward = 2 * b*s*v*d; backward = 2 * forward. Worked number: GPT-2, 8 sequences of 1024 tokens,
vocabulary 50257, width 768 -> 2 * 8 * 1024 * 50257 * 768 = 632 GFLOP.

The table is the embedding op's weight (`Op.tied`: ("embedding", that op)), one tensor whose gradient sums
both readers'; the bias, when there is one, is the head's own. A config splits samples, sequence, the
vocabulary (the table's rows: the logits split by columns, the input of a vocab-parallel cross-entropy)
and hidden (contracting: each task holds a partial sum of the logits, the bias added once, `task_apply`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.kinds.base import KindSpec, elements
from models.labels import Label, Role, Space, label_ranges
from models.op_value import Op, OpKind


class Attend(KindSpec):
    kind = OpKind.ATTEND

    def forward_flops(self, op: Op) -> int:
        return 2 * elements(op.output_shape) * op.input_shapes[0][-1]

    def backward_flops(self, op: Op) -> int:
        return 2 * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        """x[sample sequence hidden] . embedding[vocab hidden] + bias[vocab] -> y[sample sequence vocab]."""
        batch, sequence, hidden = op.input_shapes[0]
        labels = (Label("sample", batch, Role.SAMPLE), Label("sequence", sequence, Role.SEQUENCE),
                  Label("vocab", op.output_shape[-1], Role.VOCAB), Label("hidden", hidden, Role.HIDDEN))
        params = {"embedding": ("vocab", "hidden"), "bias": ("vocab",)}
        return Space(labels, ("sample", "sequence", "vocab"), (("sample", "sequence", "hidden"),),
                     tuple((name, params[name]) for name, _ in op.param_shapes),
                     config_labels=("sample", "sequence", "vocab", "hidden"))

    def layer(self, op: Op, rngs):
        """The head's own parameter, its bias (zeros, as nnx.Linear's); the table is its owner's."""
        return OutputBias(op.output_shape[-1], op.dtype) if "bias" in dict(op.param_shapes) else None

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        logits = jnp.einsum("bsd,vd->bsv", inputs[0], params["embedding"])
        return logits + params["bias"] if "bias" in params else logits

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        """A task holding a later share of hidden adds no bias: the partial sums add up to one."""
        if "bias" in params and label_ranges(op.space, degrees, index)["hidden"][0] > 0:
            params = {**params, "bias": jnp.zeros_like(params["bias"])}
        return super().task_apply(op, degrees, index, params, inputs, labels)


class OutputBias(nnx.Module):
    def __init__(self, vocab: int, dtype: str):
        self.bias = nnx.Param(jnp.zeros((vocab,), dtype))
