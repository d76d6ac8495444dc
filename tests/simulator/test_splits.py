"""simulator.splits.GraphSplits: the flows between a producer's and a consumer's tasks cover what each
consumer task reads exactly once (of partial sums, once per group), the gradient flows back along the same
intersections, and a task keeps its parameters, their gradients, the optimizer's states and its output."""

import itertools

import numpy as np

from models.graph import GraphBuilder
from simulator.splits import GraphSplits
from soap.space import enumerate_configs


def _mlp():
    builder = GraphBuilder("mlp", "toy", (8, 16))
    builder.dense("fc1", 32, relu=False)  # offered a split of its input features (partial sums)
    builder.dense("fc2", 16)
    builder.softmax_xent("loss")
    return builder.build(8)


GRAPH = _mlp()
SPLITS = GraphSplits(GRAPH, optimizer_states=1)
FC1, FC2 = GRAPH.index("fc1"), GRAPH.index("fc2")
PAIRS = list(itertools.product((c.degrees for c in enumerate_configs(GRAPH.ops[FC1], 4)),
                               (c.degrees for c in enumerate_configs(GRAPH.ops[FC2], 4))))


def test_each_consumer_task_reads_its_whole_box_once():
    for producer_degrees, consumer_degrees in PAIRS:
        flows = SPLITS.volumes(FC1, FC2, 0, producer_degrees, consumer_degrees)
        boxes = SPLITS.input_boxes(FC2, consumer_degrees, 0)
        box_bytes = np.prod(boxes[:, :, 1] - boxes[:, :, 0], axis=1) * GRAPH.ops[FC1].dtype_bytes
        read = flows.tasks, flows.num_bytes
        if SPLITS.partial_output(FC1, producer_degrees):  # each task of a group holds a partial sum of one box
            groups = SPLITS.output_partial_groups(FC1, producer_degrees)
            first = np.isin(flows.source_tasks, [group[0] for group in groups])
            read = flows.tasks[first], flows.num_bytes[first]
        read = np.bincount(read[0], weights=read[1], minlength=len(boxes))
        assert np.array_equal(read, box_bytes), (producer_degrees, consumer_degrees)
        assert np.all(flows.source_tasks % SPLITS.copies(FC1, producer_degrees) == 0)  # first copies only


def test_the_gradient_flows_back_along_the_same_intersections_without_copies():
    for producer_degrees, consumer_degrees in PAIRS:
        if SPLITS.copies(FC1, producer_degrees) > 1 or SPLITS.copies(FC2, consumer_degrees) > 1:
            continue
        forward = SPLITS.volumes(FC1, FC2, 0, producer_degrees, consumer_degrees)
        backward = SPLITS.backward_volumes(FC1, FC2, 0, producer_degrees, consumer_degrees)
        assert np.array_equal(backward.source_tasks, forward.tasks)
        assert np.array_equal(backward.tasks, forward.source_tasks)
        assert np.array_equal(backward.num_bytes, forward.num_bytes)


def test_an_unsplit_dense_keeps_its_parameters_three_times_with_momentum_and_its_output():
    degrees = (1, 1, 1)
    kernel_bytes, bias_bytes = 16 * 32 * 4, 32 * 4
    assert SPLITS.param_slice_bytes(FC1, degrees) == (kernel_bytes, bias_bytes)
    assert SPLITS.kept_bytes(FC1, degrees) == 3 * (kernel_bytes + bias_bytes) + 8 * 32 * 4  # 7552


def test_a_dense_split_on_its_input_features_keeps_no_partial_output():
    degrees = (1, 1, 2)
    assert SPLITS.partial_output(FC1, degrees) and SPLITS.output_partial_groups(FC1, degrees) == [[0, 1]]
    assert SPLITS.output_group_bytes(FC1, degrees) == (8 * 32 * 4,)
    assert SPLITS.kept_bytes(FC1, degrees) == 3 * (8 * 32 * 4 + 32 * 4)  # half the kernel, the whole bias
