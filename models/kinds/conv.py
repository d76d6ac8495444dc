"""conv2d: a 2-D convolution, NHWC input, HWIO kernel, optional bias, optional fused ReLU.

FLOPs: forward = 2 * N * Ho * Wo * Co * Kh * Kw * Ci; backward = 2 * forward (input and weight
gradients), 1 * forward for a conv reading the data batch (no input gradient). Worked number: AlexNet
conv1 at 64x64, batch 128 -> 2 * 128 * 16 * 16 * 64 * 11 * 11 * 3 = 1.52 GFLOP.

A task split on the output channels reads its input whole in height and width (`task_input_boxes`):
XLA's SPMD partitioner (JAX 0.10.2) computes such a conv wrongly when its input is split spatially
(tests/models/test_train.py checks such strategies), so the runtime pins it so and the simulator charges
it. Its input gradient is then a partial sum over its channel group (`partial_input_gradient`).

A conv whose output image has at most IM2COL_MAX_PIXELS pixels is computed as its patches
(lax.conv_general_dilated_patches) times its kernel (`im2col`, set by the graph builder from the whole
op's output, kept by every task's local op): XLA:CPU's convolution has cliffs on small images. Measured
on one core, batch 64, forward / forward with both gradients (2026-11-30):
    2x2x512, 3x3x512x512, stride 1:  lax 1077 / 2153 ms,  patches 26 / 72 ms
    4x4x256, 3x3x256x512, stride 2:  lax 7.5 / 281 ms,    patches 8.7 / 50 ms   (a 2x2 output)
    4x4x256, 3x3x256x256, stride 1:  lax 12 / 38 ms,      patches 22 / 181 ms
    16x16x64, 3x3x64x64, stride 1:   lax 12 / 41 ms,      patches 67 / 681 ms
(shared/REFERENCE.md has the same cliffs at batch 128.) Above 2x2 outputs the plain convolution wins.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax import lax

from models.kinds.base import KindSpec, elements, relu_if
from models.kinds.window import window_boxes, window_local_op
from models.op import Box, Op, OpKind


IM2COL_MAX_PIXELS = 4  # 2x2 outputs and smaller


class Conv2D(KindSpec):
    kind = OpKind.CONV2D

    def forward_flops(self, op: Op) -> int:
        kh, kw = op.kernel_hw
        return 2 * elements(op.output_shape) * kh * kw * op.input_shapes[0][-1]

    def backward_flops(self, op: Op) -> int:
        return (2 if op.input_grad else 1) * self.forward_flops(op)

    def partial_input_gradient(self, op: Op, degrees: tuple[int, ...]) -> bool:
        return degrees[-1] > 1

    def input_boxes(self, op: Op, out_box: Box) -> tuple[Box, ...]:
        return window_boxes(op, out_box, (0, op.input_shapes[0][3]))

    def task_input_boxes(self, op: Op, degrees: tuple[int, ...], out_box: Box) -> tuple[Box, ...]:
        boxes = self.input_boxes(op, out_box)
        if degrees[-1] > 1:  # whole in height and width: see the module docstring
            (batch, _, _, channels), in_shape = boxes[0], op.input_shapes[0]
            return ((batch, (0, in_shape[1]), (0, in_shape[2]), channels),)
        return boxes

    def input_split(self, op: Op, output_split: tuple) -> tuple[tuple, ...]:
        if output_split[3] is not None:
            return ((output_split[0], None, None, None),)
        return (tuple(output_split[:3]) + (None,),)

    def local_op(self, op: Op, degrees: tuple[int, ...]) -> Op:
        return window_local_op(op, degrees, op.input_shapes[0][3])

    def layer(self, op: Op, rngs):
        return nnx.Conv(op.input_shapes[0][-1], op.output_shape[-1], op.kernel_hw, strides=op.stride_hw,
                        padding=op.padding.value, use_bias=len(op.param_shapes) > 1, dtype=op.dtype,
                        param_dtype=op.dtype, rngs=rngs)

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        """As nnx.Conv computes it (lax.conv_general_dilated, then the bias), or as patches @ kernel."""
        if op.im2col:
            kh, kw, ci, co = params["kernel"].shape
            patches = lax.conv_general_dilated_patches(inputs[0], (kh, kw), op.stride_hw, op.padding.value,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
            # The patches' features are ordered (input channel, kernel row, kernel column).
            y = patches @ params["kernel"].transpose(2, 0, 1, 3).reshape(ci * kh * kw, co)
        else:
            y = lax.conv_general_dilated(inputs[0], params["kernel"], op.stride_hw, op.padding.value,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if "bias" in params:
            y = y + params["bias"]
        return relu_if(op, y)
