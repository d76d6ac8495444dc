"""benchmarks.accuracy's strategies: a token model's random ones split the vocabulary and the sequence."""

from benchmarks.accuracy import _splits, _uses_a_device_subset, random_strategies
from models.labels import Role
from models.zoo import FamilyOptions, build_graph


def test_a_token_models_random_strategies_split_the_vocabulary_the_sequence_and_use_a_device_subset():
    graph = build_graph("gpt2", "tokens", 8, FamilyOptions(depth=1, width=32, heads=4, vocab=64, seq_len=16))
    chosen = random_strategies(graph, 2, 4, seed=0)
    assert list(chosen) == ["random1", "random2", "random3", "branches-apart"]
    assert _splits(graph, Role.VOCAB)(chosen["random1"])
    assert _splits(graph, Role.SEQUENCE)(chosen["random2"])
    assert _uses_a_device_subset(chosen["random3"])
