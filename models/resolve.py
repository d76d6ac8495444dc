"""What a command's --model names: a zoo model by name, or a user's flax module as `path/to/file.py:NAME`.

    model = resolve_model("alexnet", "tiny-imagenet", 128)                   # model.graph; no module
    model = resolve_model("mine.py:Net", "tiny-imagenet", 128)               # imported: model.imported
    model = resolve_model("gpt.py:GPT", "tokens", 8, FamilyOptions(seq_len=64))   # a user's token model

A name containing ".py:" is a user's file: models.user_model builds NAME and models.importer imports it
into the same operator graph the zoo builds, with the module's own initial parameters and state (which
a run then trains, and whose direct call is the reference loss). Anything else is a zoo name
(models.zoo.build_graph). A user's token model takes --seq-len only (its sizes are its own). Every failure is
one SoapError line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flax import nnx

from models.graph import OpGraph
from models.importer import ImportedModel, import_model
from models.user_model import SPEC_FORM, load_user_model
from models.zoo import MODELS, FamilyOptions, build_graph, require_no_family_options

MODEL_HELP = f"one of: {', '.join(MODELS)}; or a flax nnx model of your own as {SPEC_FORM}"


@dataclass(frozen=True, eq=False)
class ResolvedModel:
    """A model's graph; for a user's module also the module and its import (own parameters and state)."""

    graph: OpGraph
    module: nnx.Module | None = None
    imported: ImportedModel | None = None


def is_user_model(spec: str) -> bool:
    return ".py:" in spec


def resolve_model(spec: str, dataset: str, batch_size: int, options: FamilyOptions = FamilyOptions()) -> ResolvedModel:
    """`options` size a zoo transformer family's member (models.zoo.FamilyOptions); of them only seq_len, the
    token batch's sequence length, applies to a user's model."""
    if not is_user_model(spec):
        return ResolvedModel(build_graph(spec, dataset, batch_size, options))
    require_no_family_options(spec, replace(options, seq_len=None))
    module = load_user_model(spec)
    imported = import_model(module, dataset, batch_size, seq_len=options.seq_len)
    return ResolvedModel(imported.graph, module, imported)
