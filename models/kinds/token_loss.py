"""token_xent: per-token softmax cross-entropy of logits[b s v] against integer labels[b s] (the next ids).

    loss[b s] = logsumexp(logits[b s :]) - logits[b s label]

FLOPs: forward = 5 * b*s*v (max, subtract, exp, sum, log-gather); backward = 2 * b*s*v (softmax minus
one-hot). Worked number: GPT-2, 8 sequences of 1024 tokens, vocabulary 50257 -> 5 * 8 * 1024 * 50257 =
2.06 GFLOP forward.

Splittable on samples, sequence and the vocabulary. A vocabulary split is Megatron's vocab-parallel
cross-entropy: each task holds its columns of the logits; the max, the sum of exps and the label's logit
(0 on tasks not holding it) are all-reduced over the vocabulary group, 3 floats per token (Megatron-LM's
vocab_parallel_cross_entropy runs three all-reduces; `stats_bytes`), and only b*s scalars cross.
"""

from __future__ import annotations

from models.kinds.base import elements
from models.kinds.loss import SoftmaxXent
from models.labels import Label, Role, Space, local_shape, splits_statistics
from models.op_value import Op, OpKind

STATISTICS_PER_TOKEN = 3  # max, sum of exps, the label's logit


class TokenXent(SoftmaxXent):
    """softmax_xent's FLOPs and computation, per token, with a vocabulary split."""

    kind = OpKind.TOKEN_XENT

    def space(self, op: Op) -> Space:
        """logits[sample sequence vocab] -> loss[sample sequence]; statistics over vocab."""
        batch, sequence, vocab = op.input_shapes[0]
        labels = (Label("sample", batch, Role.SAMPLE), Label("sequence", sequence, Role.SEQUENCE),
                  Label("vocab", vocab, Role.VOCAB))
        return Space(labels, ("sample", "sequence"), (("sample", "sequence", "vocab"),),
                     config_labels=("sample", "sequence", "vocab"), statistics=frozenset({"vocab"}))

    def stats_bytes(self, op: Op, degrees: tuple[int, ...]) -> int:
        space = op.space
        if not splits_statistics(space, degrees):
            return 0
        return STATISTICS_PER_TOKEN * elements(local_shape(space, degrees, space.output)) * op.dtype_bytes
