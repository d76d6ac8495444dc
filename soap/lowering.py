"""Lowering a Strategy to plain JAX sharding objects: a Mesh per op, its output and parameter shardings.

    shardings = strategy_shardings(graph, strategy)          # soap.step.Shardings
    shardings.params["fc7"]["kernel"]                        # NamedSharding, e.g. P(None, 'channel')
    step = TrainStep(graph, shardings, sgd_momentum())

Op i's mesh holds its devices in the shape of its degrees, one axis per config label named after it
(sample, height, width, channel: models.labels), so that task k (row-major over the degree grid) runs on
devices[k]. Its output and each parameter are split on the axes of the labels they carry that have a
degree > 1 (models.labels.param_axes: a channel split splits the LAST axis of a conv kernel HWIO, a dense
kernel IO, a bias, a batch norm's scale); the other splits replicate them. Meshes use AxisType.Auto, so with_sharding_constraint
constrains (jax.make_mesh's default, Explicit, would assert instead). Strategy device id i is
`devices[i]`, by default `jax.devices()[i]` (in a cluster, ordered by process).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from models.labels import output_axes, param_axes
from models.errors import SoapError
from models.graph import OpGraph
from models.network import own_param_shapes
from models.op import Op
from soap.step import Shardings
from soap.config import ParallelConfig
from soap.strategy import Strategy


class LoweringError(SoapError):
    """A strategy that cannot be placed on the JAX devices at hand."""


def _strategy_devices(strategy: Strategy, devices: Sequence[jax.Device] | None = None) -> tuple[jax.Device, ...]:
    """The JAX device of each strategy device id (0..N-1)."""
    devices = tuple(jax.devices() if devices is None else devices)
    if len(devices) < strategy.num_devices:
        raise LoweringError(
            f"the strategy is for {strategy.num_devices} devices but JAX has {len(devices)}; run it on "
            f"{strategy.num_devices} devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{strategy.num_devices}, or a local cluster of {strategy.num_devices} workers)"
        )
    return devices[:strategy.num_devices]


def op_mesh(op: Op, config: ParallelConfig, devices: Sequence[jax.Device]) -> Mesh:
    grid = np.array([devices[i] for i in config.devices], dtype=object).reshape(config.degrees)
    names = op.space.config_labels
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def output_sharding(op: Op, config: ParallelConfig, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(*output_axes(op.space, config.degrees)))


def param_shardings(op: Op, config: ParallelConfig, mesh: Mesh, state: bool = False) -> dict[str, NamedSharding]:
    """Each parameter the op owns (or, with `state=True`, state array) split on the labels it carries that
    the config splits (models.labels.param_axes); replicated otherwise. A tied weight is its owner's (the
    step reads it where soap.step.tied_sharding says)."""
    tied = {name for name, _ in op.tied}
    arrays = op.space.state if state else [(name, names) for name, names in op.space.params if name not in tied]
    return {name: NamedSharding(mesh, PartitionSpec(*param_axes(op.space, names, config.degrees)))
            for name, names in arrays}


def strategy_shardings(graph: OpGraph, strategy: Strategy,
                       devices: Sequence[jax.Device] | None = None) -> Shardings:
    """Every op's output sharding and the parameter- and state-sharding pytrees (op -> {"kernel", "bias"})."""
    if strategy.graph_signature != graph.signature:
        raise LoweringError(f"the strategy is for graph {strategy.graph_signature!r} but {graph.model} here is "
                            f"graph {graph.signature!r}; lower a strategy made for this graph")
    devices = _strategy_devices(strategy, devices)
    activations, params, state = {}, {}, {}
    for op in graph.ops:
        config = strategy[op.name]
        mesh = op_mesh(op, config, devices)
        activations[op.name] = output_sharding(op, config, mesh)
        if own_param_shapes(op):
            params[op.name] = param_shardings(op, config, mesh)
        if op.state_shapes:
            state[op.name] = param_shardings(op, config, mesh, state=True)
    return Shardings(activations, params, state)

