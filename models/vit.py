"""ViT-B/16 (Dosovitskiy et al. 2021) as an operator graph: 16x16 patches, class token, 12 pre-norm blocks.

    python -m models vit_b16 --dataset imagenet --batch-size 8      # 86,567,656 parameters at 224x224

patch conv (16x16, stride 16, 768 channels, VALID, bias) -> image_tokens [b 196 768] -> class_token
[b 197 768] -> add_position (197 learned rows) -> 12 x [layer_norm -> q, k, v dense -> split_heads x 3 ->
attention -> merge_heads -> dense -> residual add -> layer_norm -> dense 3072 -> GELU (exact) -> dense 768
-> residual add] -> layer_norm -> first_token (the class token) -> dense 1000 -> softmax_xent.
Layer norm epsilon 1e-6, as released; no dropout (ImageNet-21k pretraining of B/16 used 0.1, the
released fine-tuned models 0: the parameter count is the same). At another image size the positions are
the patches there plus one (h/16 * w/16 + 1), as fine-tuning at other sizes does. `depth`, `width` and
`heads` build a smaller member (the MLP 4x the width, as in every ViT size): the commands' --depth,
--width and --heads.
"""

from __future__ import annotations

from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph
from models.transformer import mlp, self_attention

PATCH, WIDTH, DEPTH, HEADS = 16, 768, 12, 12
MLP_RATIO = 4  # the MLP's hidden width over the model's
LAYER_NORM_EPS = 1e-6


def vit_b16(dataset: DatasetShape, batch_size: int, depth: int = DEPTH, width: int = WIDTH,
            heads: int = HEADS) -> OpGraph:
    b = GraphBuilder("vit_b16", dataset.name, (batch_size, dataset.height, dataset.width, dataset.channels))
    b.conv2d("patches", width, kernel=PATCH, stride=PATCH, padding="VALID", relu=False)
    b.image_tokens("tokens")
    tokens = b.class_token("cls")
    residual = b.add_position("pos", b.shape(tokens)[1])
    for layer in range(depth):
        residual = _block(b, f"encoder{layer}", residual, heads)
    b.layer_norm("ln_f", LAYER_NORM_EPS)
    b.first_token("class_token")
    b.dense("head", dataset.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)


def _block(b: GraphBuilder, prefix: str, residual: str, heads: int) -> str:
    b.layer_norm(f"{prefix}.ln_1", LAYER_NORM_EPS, input=residual)
    attended = self_attention(b, prefix, f"{prefix}.ln_1", heads, causal=False)
    middle = b.add(f"{prefix}.add_1", inputs=[residual, attended])
    projected = mlp(b, prefix, b.layer_norm(f"{prefix}.ln_2", LAYER_NORM_EPS), MLP_RATIO * b.shape(residual)[-1],
                    "gelu")
    return b.add(f"{prefix}.add_2", inputs=[middle, projected])
