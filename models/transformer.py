"""What the transformer families share: their sizes, and the attention and MLP sublayers every block builds.

    attended = self_attention(b, "h0", "h0.ln_1", heads=12, causal=True)   # q, k, v -> heads -> ... -> proj
    out = mlp(b, "h0", "h0.ln_2", 3072, "gelu_tanh")                         # fc -> act -> mlp_proj

Used by models/gpt2.py, models/bert.py and models/vit.py; each adds its own norms, dropout and residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.graph import GraphBuilder


@dataclass(frozen=True)
class TransformerSize:
    depth: int
    width: int
    heads: int
    vocab: int
    context: int  # learned positions


def self_attention(b: GraphBuilder, prefix: str, source: str, heads: int, causal: bool) -> str:
    """q, k, v dense (width -> width, bias) of `source` -> split_heads x 3 -> attention -> merge_heads -> the
    output projection (dense, bias); returns the projection's name."""
    width = b.shape(source)[-1]
    for part in ("q", "k", "v"):
        b.dense(f"{prefix}.{part}", width, relu=False, input=source)
        b.split_heads(f"{prefix}.{part}_heads", heads)
    b.attention(f"{prefix}.attn", inputs=[f"{prefix}.{p}_heads" for p in ("q", "k", "v")], causal=causal)
    b.merge_heads(f"{prefix}.merge")
    return b.dense(f"{prefix}.attn_proj", width, relu=False)


def mlp(b: GraphBuilder, prefix: str, source: str, hidden: int, fn: str) -> str:
    """dense (width -> hidden) of `source` -> activation `fn` -> dense (hidden -> width); returns the last
    dense's name."""
    width = b.shape(source)[-1]
    b.dense(f"{prefix}.fc", hidden, relu=False, input=source)
    b.activation(f"{prefix}.act", fn)
    return b.dense(f"{prefix}.mlp_proj", width, relu=False)
