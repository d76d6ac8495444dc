"""`Strategy`: a frozen mapping op name -> ParallelConfig for one graph on N devices, and its JSON file.

    python -m search.optimize --model alexnet --gpus 2 --init runs/.../strategy.json

File format (version 1), degrees keyed by the op's config label names, degree-1 labels may be left out:
    {"format": "soap-strategy", "version": 1, "model": "alexnet", "dataset": "tiny-imagenet",
     "batch_size": 128, "graph_signature": "59a39a26afea61d7", "num_devices": 2,
     "ops": {"conv1": {"degrees": {"sample": 2}, "devices": [0, 1]}, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from models.documents import read_document
from models.graph import OpGraph
from soap.config import ParallelConfig
from soap.errors import InvalidConfigError, StrategyFileError
from soap.space import validate_config

FORMAT = "soap-strategy"
VERSION = 1


@dataclass(frozen=True)
class Strategy(Mapping):
    """Op name -> ParallelConfig, in the graph's program order; hashable, compared by value.

    Construct with `Strategy.for_graph(graph, num_devices, configs)`, which validates every config.
    """

    model: str
    graph_signature: str
    num_devices: int
    items_: tuple[tuple[str, ParallelConfig], ...]
    _index: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(self.items_))

    @classmethod
    def for_graph(cls, graph: OpGraph, num_devices: int, configs: Mapping[str, ParallelConfig]) -> Strategy:
        """A validated strategy giving every op of `graph` its config from `configs`."""
        if num_devices < 1:
            raise InvalidConfigError(f"the device count must be >= 1, got {num_devices}")
        names = {op.name for op in graph.ops}
        unknown = sorted(set(configs) - names)
        missing = [op.name for op in graph.ops if op.name not in configs]
        if unknown:
            raise InvalidConfigError(f"strategy names ops {unknown} that {graph.model} does not have; its ops: "
                                     f"{', '.join(op.name for op in graph.ops)}")
        if missing:
            raise InvalidConfigError(f"strategy gives no config for ops {missing} of {graph.model}; "
                                     f"every op needs one")
        for op in graph.ops:
            validate_config(op, configs[op.name], num_devices)
        return cls(graph.model, graph.signature, num_devices, tuple((op.name, configs[op.name]) for op in graph.ops))

    def __getitem__(self, name: str) -> ParallelConfig:
        return self._index[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def with_config(self, name: str, config: ParallelConfig) -> Strategy:
        """A copy with op `name` given `config` (the caller has validated it for the op)."""
        assert name in self._index, name
        items = tuple((n, config if n == name else c) for n, c in self.items_)
        return Strategy(self.model, self.graph_signature, self.num_devices, items)

    def describe(self, graph: OpGraph) -> str:
        """One line per op: 'conv1    sample=2 @ 0-1'."""
        width = max(8, *(len(name) for name, _ in self.items_))
        return "\n".join(
            f"{name:<{width}} {config.describe(graph.op(name).space.config_labels)}"
            for name, config in self.items_
        )


def strategy_to_json(strategy: Strategy, graph: OpGraph) -> str:
    ops = {}
    for name, config in strategy.items_:
        dims = graph.op(name).space.config_labels
        degrees = {dim: d for dim, d in zip(dims, config.degrees) if d > 1}
        ops[name] = {"degrees": degrees, "devices": list(config.devices)}
    header = {
        "format": FORMAT, "version": VERSION, "model": graph.model, "dataset": graph.dataset,
        "batch_size": graph.batch_size, "graph_signature": graph.signature, "num_devices": strategy.num_devices,
    }
    # One line per op, so that a strategy file reads (and diffs) like the table it is.
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()]
    op_lines = ",\n".join(f"    {json.dumps(name)}: {json.dumps(entry)}" for name, entry in ops.items())
    return "{\n" + "\n".join(lines) + '\n  "ops": {\n' + op_lines + "\n  }\n}\n"


def strategy_from_json(text: str, graph: OpGraph, num_devices: int, source: str = "strategy file") -> Strategy:
    """Parse and validate a strategy file for `graph` on `num_devices`; StrategyFileError if it does not fit."""
    document = read_document(text, "strategy", VERSION, source, StrategyFileError,
                             "pass a file written by search.optimize")
    expected = {"model": graph.model, "dataset": graph.dataset, "batch_size": graph.batch_size,
                "num_devices": num_devices}
    for key, want in expected.items():
        if document.get(key) != want:
            raise StrategyFileError(f"{source} is for {key} {document.get(key)!r} but this run has {key} {want!r}; "
                                    f"pass a strategy made for the same {key} or change the run's")
    if document.get("graph_signature") != graph.signature:
        raise StrategyFileError(f"{source} is for graph {document.get('graph_signature')!r} but {graph.model} here "
                                f"is graph {graph.signature!r} (the model's ops changed); search again")
    ops = document.get("ops")
    if not isinstance(ops, dict):
        raise StrategyFileError(f"{source} has no \"ops\" object mapping op names to configs")
    configs = {name: _config_from_json(entry, graph, name, source) for name, entry in ops.items()}
    try:
        return Strategy.for_graph(graph, num_devices, configs)
    except InvalidConfigError as error:
        raise StrategyFileError(f"{source}: {error}") from None


def _config_from_json(entry: object, graph: OpGraph, name: str, source: str) -> ParallelConfig:
    if name not in {op.name for op in graph.ops}:
        raise StrategyFileError(f"{source} names op {name!r} that {graph.model} does not have")
    if not isinstance(entry, dict) or not isinstance(entry.get("degrees"), dict) \
            or not isinstance(entry.get("devices"), list):
        raise StrategyFileError(f"{source}: op {name!r} needs {{\"degrees\": {{dim: degree}}, \"devices\": [ids]}}")
    dims = list(graph.op(name).space.config_labels)
    bad = sorted(set(entry["degrees"]) - set(dims))
    if bad:
        raise StrategyFileError(f"{source}: op {name!r} has no dims {bad}; its dims: {', '.join(dims)}")
    values = [entry["degrees"].get(d, 1) for d in dims] + entry["devices"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise StrategyFileError(f"{source}: op {name!r} degrees and devices must be integers, got {entry}")
    try:
        return ParallelConfig(tuple(entry["degrees"].get(d, 1) for d in dims), tuple(entry["devices"]))
    except InvalidConfigError as error:
        raise StrategyFileError(f"{source}: op {name!r}: {error}") from None
