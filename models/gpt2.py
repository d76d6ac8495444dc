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

from models.graph import GraphBuilder, OpGraph
from models.transformer import TransformerSize, mlp, self_attention

DROPOUT_RATE = 0.1
LAYER_NORM_EPS = 1e-5
VOCAB, CONTEXT = 50257, 1024
SIZES = {
    "gpt2": TransformerSize(12, 768, 12, VOCAB, CONTEXT),
    "gpt2_medium": TransformerSize(24, 1024, 16, VOCAB, CONTEXT),
    "gpt2_large": TransformerSize(36, 1280, 20, VOCAB, CONTEXT),
    "gpt2_xl": TransformerSize(48, 1600, 25, VOCAB, CONTEXT),
}


def gpt2(name: str, size: TransformerSize, dataset: str, sequence: int, batch_size: int) -> OpGraph:
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


def _block(b: GraphBuilder, prefix: str, size: TransformerSize, residual: str) -> str:
    """One pre-norm block; returns its output (the second residual add)."""
    b.layer_norm(f"{prefix}.ln_1", LAYER_NORM_EPS, input=residual)
    self_attention(b, prefix, f"{prefix}.ln_1", size.heads, causal=True)
    b.dropout(f"{prefix}.attn_drop", DROPOUT_RATE)
    middle = b.add(f"{prefix}.add_1", inputs=[residual, f"{prefix}.attn_drop"])
    mlp(b, prefix, b.layer_norm(f"{prefix}.ln_2", LAYER_NORM_EPS), 4 * size.width, "gelu_tanh")
    b.dropout(f"{prefix}.mlp_drop", DROPOUT_RATE)
    return b.add(f"{prefix}.add_2", inputs=[middle, f"{prefix}.mlp_drop"])
