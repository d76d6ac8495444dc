"""dense: a fully-connected layer on (N, features), on [b s d] tokens or on each pixel of NHWC images
(a ConvNeXt block's nnx.Linear, a 1x1 conv by another name), optional bias and fused ReLU.

    y[sample channel] = x[sample in_channel] . kernel[in_channel channel] + bias[channel]
    y[sample sequence hidden] = x[sample sequence in_hidden] . kernel[in_hidden hidden] + bias[hidden]
    y[sample height width channel] = x[sample height width in_channel] . kernel[in_channel channel] + bias[channel]

FLOPs: forward = 2 * elements(y) * In; backward = 2 * forward (1 * forward reading the data batch).
Worked numbers: AlexNet fc7, batch 128 -> 2 * 128 * 4096 * 4096 = 4.29 GFLOP; GPT-2's MLP up-projection,
8 sequences of 1024 tokens, 768 -> 3072 -> 2 * 8 * 1024 * 3072 * 768 = 38.7 GFLOP.

Split on its outputs (images on sample, height, width and channel alike), every task reads all input
features of its samples, and its input gradient is a partial sum over its channel group (models.labels:
its input lacks the channel label). A config also splits the contracting label, in_hidden on tokens
(Megatron's row-parallel dense), in_channel on (N, features) and on images (the config's last degree,
so that strategy files written before it name the same splits): each task reads its share of x's
features and the kernel's rows and holds a partial sum of y, the bias added once (after the sum, as
Megatron does; `task_apply`); only without a fused ReLU, which cannot act on a partial sum. A column
split (hidden) is Megatron's column-parallel dense. Its backward writes the kernel gradient in the
kernel's own (in, out) orientation (`dense`).

A projection to or from attention heads that the user's module holds with the heads as a dim of their own
(nnx.LinearGeneral, nnx.MultiHeadAttention's q, k, v and output: a kernel [d h k] or [h k d]) is a dense on
the kernel viewed as [d (h k)] or [(h k) d] (models.importer), its `DenseAttrs` naming the merged label and
the heads: a split of that label must be whole heads (`Space.units`) to be a split of the module's kernel,
as the user's plan places it (soap.plan). Each task computes a plain dense (`local_op`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from models.kinds.base import KindSpec, bias_once, contracting_splits, elements, relu_if, tensor_labels
from models.labels import Label, Role, Space
from models.op_value import FlatFields, KindAttrs, Op, OpKind


@dataclass(frozen=True)
class DenseAttrs(KindAttrs):
    """A dense's fused ReLU, and on tokens the `label` (hidden: a projection to heads; in_hidden: from heads)
    that merges `heads` attention heads of the user's kernel (None: no heads merged)."""

    label: Literal["hidden", "in_hidden"] | None = None
    heads: int | None = None
    relu: bool = False

    def flat(self) -> FlatFields:
        """The heads are written only where merged, so that every other dense keeps its cost key and
        signature."""
        others = None if self.label is None else (("label", self.label), ("heads", self.heads))
        return FlatFields(relu=self.relu, others=others)

    @classmethod
    def from_flat(cls, flat: FlatFields) -> DenseAttrs:
        return cls(relu=flat.relu, **dict(flat.others or ()))


class Dense(KindSpec):
    kind = OpKind.DENSE
    fully_connected = True
    attrs_type = DenseAttrs

    def forward_flops(self, op: Op) -> int:
        return 2 * elements(op.output_shape) * op.input_shapes[0][-1]

    def backward_flops(self, op: Op) -> int:
        return (2 if op.input_grad else 1) * self.forward_flops(op)

    def space(self, op: Op) -> Space:
        if len(op.output_shape) == 3:
            return self._token_space(op)
        labels = tensor_labels(op.output_shape) + (Label("in_channel", op.input_shapes[0][-1], Role.CHANNEL),)
        names = tuple(label.name for label in labels[:-1])
        params = {"kernel": ("in_channel", "channel"), "bias": ("channel",)}
        return Space(labels, names, (names[:-1] + ("in_channel",),),
                     tuple((name, params[name]) for name, _ in op.param_shapes),
                     config_labels=names + ("in_channel",), splittable=contracting_splits(op, names, "in_channel"))

    @staticmethod
    def _token_space(op: Op) -> Space:
        """x[sample sequence in_hidden] . kernel[in_hidden hidden] + bias[hidden] -> y[sample sequence hidden];
        in_hidden a contracting label (a row split leaves partial sums of y), splittable without a fused
        ReLU (which cannot act on a partial sum); a label merging heads (`DenseAttrs`) splits whole heads."""
        batch, sequence, features = op.input_shapes[0]
        labels = (Label("sample", batch, Role.SAMPLE), Label("sequence", sequence, Role.SEQUENCE),
                  Label("hidden", op.output_shape[-1], Role.HIDDEN), Label("in_hidden", features, Role.HIDDEN))
        params = {"kernel": ("in_hidden", "hidden"), "bias": ("hidden",)}
        return Space(labels, ("sample", "sequence", "hidden"), (("sample", "sequence", "in_hidden"),),
                     tuple((name, params[name]) for name, _ in op.param_shapes),
                     config_labels=("sample", "sequence", "hidden", "in_hidden"),
                     splittable=contracting_splits(op, ("sample", "sequence", "hidden"), "in_hidden"),
                     units=() if op.attrs.label is None else ((op.attrs.label, op.attrs.heads),))

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        """A task's dense: a plain one (its heads are the user's layout, not its computation), so that it
        shares its cost key with every dense of its shapes."""
        local = super().local_op(op, degrees)
        return dataclasses.replace(local, attrs=dataclasses.replace(local.attrs, label=None, heads=None))

    def layer(self, op: Op, rngs):
        return nnx.Linear(op.input_shapes[0][-1], op.output_shape[-1], use_bias=has_bias(op), dtype=op.dtype,
                          param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        return relu_if(op, dense(inputs[0], params["kernel"], params.get("bias")))

    def task_apply(self, op: Op, degrees, index, params, inputs, labels) -> jax.Array:
        """A row-split task (in_hidden, in_channel) adds the bias only where it holds the first rows
        (`bias_once`)."""
        params = bias_once(op, degrees, index, params, "in_hidden" if len(op.output_shape) == 3 else "in_channel")
        return super().task_apply(op, degrees, index, params, inputs, labels)


def has_bias(op: Op) -> bool:
    return any(name == "bias" for name, _ in op.param_shapes)


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """x @ kernel (+ bias), as nnx.Linear computes it (x of any rank), with a backward that writes the kernel
    gradient in the kernel's own (in, out) orientation. Left to autodiff, XLA's SPMD partitioner (JAX
    0.10.2, CPU) emits it as (out, in) and transposes it inside the update: on one core that made the
    update of a 4096x4096 kernel take 170 ms instead of 38 ms, and a data-parallel AlexNet step 25% slower
    than its parts."""
    y = x @ kernel
    return y if bias is None else y + bias


def _dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel, bias)


def _dense_backward(residuals, dy):
    x, kernel, bias = residuals
    dbias = None if bias is None else jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
    return dy @ kernel.T, jnp.einsum("...i,...o->io", x, dy), dbias


dense.defvjp(_dense_forward, _dense_backward)
