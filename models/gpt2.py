"""GPT-2 (Radford et al. 2019) as an operator graph: the released checkpoints' shapes, tied head.

    python -m models gpt2 --batch-size 8                   # 124,439,808 parameters, sequences of 1024
    python -m models gpt2 --depth 4 --width 256 --heads 4 --vocab 4096 --seq-len 128   # a smaller member

wte embedding -> add_position (the context's 1024 learned rows) -> dropout -> depth x [layer_norm ->
q, k, v dense (d -> d, bias) -> split_heads x 3 -> causal attention -> merge_heads -> dense (d -> d) ->
dropout -> residual add -> layer_norm -> dense (d -> 4d) -> GELU (tanh) -> dense (4d -> d) -> dropout ->
residual add] -> layer_norm -> attend (tied to wte) -> token_xent. Dropout 0.1, layer norm epsilon 1e-5,
as released. Parameters: V*d + ctx*d + L*(12*d^2 + 13*d) + 2*d (shared/REFERENCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.graph import GraphBuilder, OpGraph

DROPOUT_RATE = 0.1
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class GPT2Size:
    depth: int
    width: int
    heads: int
    vocab: int = 50257
    context: int = 1024


SIZES = {
    "gpt2": GPT2Size(12, 768, 12),
    "gpt2_medium": GPT2Size(24, 1024, 16),
    "gpt2_large": GPT2Size(36, 1280, 20),
    "gpt2_xl": GPT2Size(48, 1600, 25),
}


def gpt2(name: str, size: GPT2Size, dataset: str, sequence: int, batch_size: int) -> OpGraph:
    b = GraphBuilder(name, dataset, (batch_size, sequence))
    b.embedding("wte", size.vocab, size.width, input=None)
    b.add_position("wpe", size.context)
    residual = b.dropout("drop", DROPOUT_RATE)
    for layer in range(size.depth):
        residual = _block(b, f"h{layer}", size, residual)
    b.layer_norm("ln_f", LAYER_NORM_EPS)
    b.attend("lm_head", "wte")
    b.token_xent("loss")
    return b.build(batch_size)


def _block(b: GraphBuilder, prefix: str, size: GPT2Size, residual: str) -> str:
    """One pre-norm block; returns its output (the second residual add)."""
    d = size.width
    b.layer_norm(f"{prefix}.ln_1", LAYER_NORM_EPS, input=residual)
    for part in ("q", "k", "v"):
        b.dense(f"{prefix}.{part}", d, relu=False, input=f"{prefix}.ln_1")
        b.split_heads(f"{prefix}.{part}_heads", size.heads)
    b.attention(f"{prefix}.attn", inputs=[f"{prefix}.{p}_heads" for p in ("q", "k", "v")], causal=True)
    b.merge_heads(f"{prefix}.merge")
    b.dense(f"{prefix}.attn_proj", d, relu=False)
    b.dropout(f"{prefix}.attn_drop", DROPOUT_RATE)
    middle = b.add(f"{prefix}.add_1", inputs=[residual, f"{prefix}.attn_drop"])
    b.layer_norm(f"{prefix}.ln_2", LAYER_NORM_EPS)
    b.dense(f"{prefix}.fc", 4 * d, relu=False)
    b.activation(f"{prefix}.gelu", "gelu_tanh")
    b.dense(f"{prefix}.mlp_proj", d, relu=False)
    b.dropout(f"{prefix}.mlp_drop", DROPOUT_RATE)
    return b.add(f"{prefix}.add_2", inputs=[middle, f"{prefix}.mlp_drop"])
