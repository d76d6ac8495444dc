"""image_tokens: an image's pixels as a sequence of tokens, x[b h w c] -> y[b (h w) c] (ViT's patch
embedding output, a conv of patch-sized kernel and stride, read row by row).

FLOPs 0 (a reshape). The token dim is `Merged` (models.labels): height outer, width inner, so a split of
the rows (height) is a contiguous range of the tokens and moves nothing; width is never split (its shard
would not be a box of the tokens). Samples and channels split as everywhere.
"""

from __future__ import annotations

import jax

from models.kinds.base import KindSpec, tensor_labels
from models.labels import Merged, Space
from models.op_value import Op, OpKind


class ImageTokens(KindSpec):
    kind = OpKind.IMAGE_TOKENS

    def space(self, op: Op) -> Space:
        """x[sample height width channel] -> y[sample (height width) channel]."""
        labels = tensor_labels(op.input_shapes[0])
        return Space(labels, ("sample", Merged(("height", "width")), "channel"),
                     (("sample", "height", "width", "channel"),), config_labels=("sample", "height", "channel"))

    def apply(self, op: Op, params, inputs: tuple[jax.Array, ...], labels) -> jax.Array:
        x = inputs[0]
        return x.reshape(x.shape[0], -1, x.shape[-1])
