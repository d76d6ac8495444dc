"""activation: an element-wise nonlinearity on a tensor of any rank (the GELU of a transformer's MLP).

FLOPs per element (a count of the arithmetic, exp and tanh as one each): relu 1; sigmoid 4 (negate, exp,
add, divide); tanh 1; silu 5 (sigmoid, multiply); gelu 5 (exact: scale, erf, add, two multiplies);
gelu_tanh 9 (cube 2, scale-add 2, scale 1, tanh 1, add 1, two multiplies). Backward = 2 * forward.
Worked number: GPT-2's MLP GELU (gelu_tanh), 8 sequences of 1024 tokens, 3072 features ->
9 * 8 * 1024 * 3072 = 226 MFLOP.

Every label splits (each task computes its own elements).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import jax

from models.kinds.base import KindSpec, elements
from models.op_value import KindAttrs, Op, OpKind


class Activation(str, enum.Enum):
    GELU = "gelu"  # exact, with erf (flax's nnx.gelu(approximate=False))
    GELU_TANH = "gelu_tanh"  # the tanh approximation GPT-2 uses
    SILU = "silu"
    TANH = "tanh"
    RELU = "relu"
    SIGMOID = "sigmoid"

    def __str__(self) -> str:  # cost keys and signatures show the name
        return self.value


FLOPS_PER_ELEMENT = {Activation.RELU: 1, Activation.SIGMOID: 4, Activation.TANH: 1, Activation.SILU: 5,
                     Activation.GELU: 5, Activation.GELU_TANH: 9}
FUNCTIONS = {Activation.GELU: lambda x: jax.nn.gelu(x, approximate=False),
             Activation.GELU_TANH: lambda x: jax.nn.gelu(x, approximate=True),
             Activation.SILU: jax.nn.silu, Activation.TANH: jax.numpy.tanh, Activation.RELU: jax.nn.relu,
             Activation.SIGMOID: jax.nn.sigmoid}


@dataclass(frozen=True)
class ActivationAttrs(KindAttrs):
    fn: Activation

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", Activation(self.fn))  # a graph file gives the name back as a string


class ActivationKind(KindSpec):
    kind = OpKind.ACTIVATION
    attrs_type = ActivationAttrs

    def forward_flops(self, op: Op) -> int:
        return FLOPS_PER_ELEMENT[op.attrs.fn] * elements(op.output_shape)

    def backward_flops(self, op: Op) -> int:
        return 2 * self.forward_flops(op)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return FUNCTIONS[op.attrs.fn](inputs[0])
