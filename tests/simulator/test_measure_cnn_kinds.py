"""Calibration times the modern CNN kinds' local ops generically (simulator.measure.local_op_programs): each
op of tests/models/test_importer_cnn.py's kind graph, whole and under every split on 4 devices, runs its
forward and backward with the shapes its local op declares."""

import jax
import pytest

from models.op import local_op
from simulator.measure import local_op_programs
from soap.space import enumerate_configs
from tests.models.test_importer_cnn import KINDS


@pytest.mark.parametrize("name", [op.name for op in KINDS.ops if op.name != "stem"])
def test_every_local_op_of_a_new_kind_runs_its_forward_and_backward(name):
    op = KINDS.op(name)
    shards = {local_op(op, config.degrees) for config in enumerate_configs(op, 4)}
    for shard in sorted(shards, key=lambda shard: shard.cost_key):
        programs = local_op_programs(shard)
        output, pullback = jax.eval_shape(programs.forward_vjp, programs.params, programs.inputs)
        grads = jax.eval_shape(programs.backward, pullback, programs.cotangent)
        assert output.shape == shard.output_shape
        assert [g.shape for g in jax.tree.leaves(grads)] == [
            a.shape for a in jax.tree.leaves((programs.params, programs.inputs))]
