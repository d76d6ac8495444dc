"""The op algebra (models.labels) on hand-built spaces: every derivation against a number worked by hand."""

from models.labels import (Label, Merged, Part, Role, Space, Window, exclusive_splits, has_partial_input_gradient,
                           input_axes, input_degrees, label_ranges, local_input_shape, local_shape, output_axes,
                           output_partial, output_partial_groups, param_axes, partial_sum_groups, replica_groups,
                           splits_inner_dim, splits_statistics, splits_window, statistics_groups, task_grid,
                           tasks_input_boxes, tasks_output_boxes, whole_labels)

# x[b i] . w[i o] + bias[o] -> y[b o], batch 4, 6 features in, 8 out.
DENSE = Space((Label("b", 4, Role.SAMPLE), Label("o", 8, Role.CHANNEL), Label("i", 6, Role.CHANNEL)),
              ("b", "o"), (("b", "i"),), (("kernel", ("i", "o")), ("bias", ("o",))))


def test_tasks_are_row_major_over_the_degree_grid():
    assert task_grid((2, 2)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert label_ranges(DENSE, (2, 2), (1, 0)) == {"b": (2, 4), "o": (0, 4)}


def test_dense_split_on_batch_and_outputs():
    degrees = (2, 2)
    assert tasks_output_boxes(DENSE, degrees) == [((0, 2), (0, 4)), ((0, 2), (4, 8)), ((2, 4), (0, 4)), ((2, 4), (4, 8))]
    # Every task reads all 6 input features of its samples.
    assert tasks_input_boxes(DENSE, degrees, 0) == [((0, 2), (0, 6))] * 2 + [((2, 4), (0, 6))] * 2
    assert input_axes(DENSE, degrees) == (("b", None),)
    assert input_degrees(DENSE, degrees) == ((2, 1),)
    # The kernel splits on its columns; tasks with one column shard hold one slice.
    assert param_axes(DENSE, ("i", "o"), degrees) == (None, "o")
    assert local_shape(DENSE, degrees, ("i", "o")) == (6, 4)
    assert replica_groups(DENSE, degrees) == [[0, 2], [1, 3]]
    # Its input lacks the output label o: split on o, the input gradient is a partial sum over o's tasks.
    assert has_partial_input_gradient(DENSE, degrees, 0)
    assert partial_sum_groups(DENSE, degrees, 0) == [[0, 1], [2, 3]]
    assert not has_partial_input_gradient(DENSE, (4, 1), 0)
    assert splits_inner_dim(DENSE, degrees) and not splits_inner_dim(DENSE, (4, 1))


def test_window_reads_its_halo_and_a_split_makes_the_local_op_a_window():
    # A 3-tap window of stride 2, leading pad 1, over 8 rows -> 4 output rows.
    space = Space((Label("h", 4, Role.HEIGHT), Label("c", 2, Role.CHANNEL)), ("h", "c"),
                  ((Window("h", 8, 3, 2, 1), "c"),))
    # Output rows [0, 2) read input rows [-1, 4) -> [0, 4); rows [2, 4) read [3, 8).
    assert tasks_input_boxes(space, (2, 1), 0) == [((0, 4), (0, 2)), ((3, 8), (0, 2))]
    assert splits_window(space, (2, 1)) and not splits_window(space, (1, 2))
    assert local_input_shape(space, (2, 1), 0) == (5, 2)  # (2 - 1) * 2 + 3 rows
    assert local_input_shape(space, (1, 2), 0) == (8, 1)  # unsplit: the whole rows, its channel shard


def test_whole_when_split_reads_the_named_labels_whole():
    space = Space((Label("h", 4, Role.HEIGHT), Label("o", 2, Role.CHANNEL)), ("h", "o"),
                  ((Window("h", 4, 1, 1, 0),),), whole_when_split=(("o", frozenset({"h"})),))
    assert whole_labels(space, (2, 2)) == {"h"}
    assert tasks_input_boxes(space, (2, 2), 0) == [((0, 4),)] * 4
    assert input_axes(space, (2, 2)) == ((None,),)
    assert tasks_input_boxes(space, (2, 1), 0) == [((0, 2),), ((2, 4),)]


def test_part_reads_its_overlap_and_is_never_sharded_at_run_time():
    # concat of 3 and 5 channels into 8.
    space = Space((Label("c", 8, Role.CHANNEL),), ("c",), ((Part("c", 0, 3),), (Part("c", 3, 5),)))
    assert tasks_input_boxes(space, (2,), 0) == [((0, 3),), ((0, 0),)]
    assert tasks_input_boxes(space, (2,), 1) == [((0, 1),), ((1, 5),)]
    assert input_axes(space, (2,)) == ((None,), (None,))
    assert local_input_shape(space, (2,), 1) == (2,)


def test_a_split_that_does_not_divide_an_input_reads_it_whole():
    space = Space((Label("b", 4, Role.SAMPLE),), ("b",), (("b",),))
    assert tasks_input_boxes(space, (2,), 0) == [((0, 2),), ((2, 4),)]
    uneven = Space((Label("h", 6, Role.HEIGHT),), ("h",), ((Window("h", 7, 2, 1, 0),),))
    assert tasks_input_boxes(uneven, (2,), 0) == [((0, 7),)] * 2  # 7 rows do not split in 2


def test_statistics_are_all_reduced_by_the_tasks_that_split_them():
    space = Space((Label("b", 4, Role.SAMPLE), Label("c", 2, Role.CHANNEL)), ("b", "c"), (("b", "c"),),
                  (("scale", ("c",)),), statistics=frozenset({"b"}))
    assert statistics_groups(space, (2, 2)) == [[0, 2], [1, 3]]
    assert splits_statistics(space, (2, 1)) and not splits_statistics(space, (1, 2))
    assert replica_groups(space, (2, 2)) == [[0, 2], [1, 3]]


def test_splittable_and_config_labels_default_to_the_output():
    assert DENSE.config_labels == ("b", "o") and DENSE.splittable == {"b", "o"}
    assert DENSE.degree_map((2, 1)) == {"b": 2, "o": 1}


def test_a_split_of_a_contracting_label_leaves_partial_sums_of_the_output():
    # Megatron's row-parallel dense: x[b i] . w[i o] with i split; each task sums over its share of i.
    row = Space(DENSE.labels, ("b", "o"), (("b", "i"),), DENSE.params, config_labels=("b", "o", "i"))
    assert output_partial(row, (1, 1, 2)) and not output_partial(row, (2, 2, 1))
    assert output_partial_groups(row, (2, 1, 2)) == [[0, 1], [2, 3]]
    assert tasks_output_boxes(row, (1, 1, 2)) == [((0, 4), (0, 8))] * 2  # both hold all of y, in part
    assert tasks_input_boxes(row, (1, 1, 2), 0) == [((0, 4), (0, 3)), ((0, 4), (3, 6))]
    assert input_axes(row, (1, 1, 2)) == ((None, "i"),)
    assert param_axes(row, ("i", "o"), (1, 1, 2)) == ("i", None)
    assert output_axes(row, (2, 1, 2)) == ("b", None)
    assert not has_partial_input_gradient(row, (1, 1, 2), 0)  # x carries i: each task's gradient is its own


def test_an_exclusive_pair_of_labels_is_named_when_both_are_split():
    # A conv's input channels rule out its height (models/kinds/conv.py: XLA computes that split wrongly).
    row = Space(DENSE.labels, ("b", "o"), (("b", "i"),), DENSE.params, config_labels=("b", "o", "i"),
                exclusive=(("i", frozenset({"b", "o"})),))
    assert exclusive_splits(row, (2, 1, 2)) == ("i", "b") and exclusive_splits(row, (1, 2, 2)) == ("i", "o")
    assert exclusive_splits(row, (2, 2, 1)) is None and exclusive_splits(row, (1, 1, 4)) is None


def test_statistics_labels_are_summed_inside_the_op_not_left_partial():
    # A vocabulary-split cross-entropy: logits[b v] -> loss[b], max and sum all-reduced over v.
    xent = Space((Label("b", 4, Role.SAMPLE), Label("v", 6, Role.VOCAB)), ("b",), (("b", "v"),),
                 config_labels=("b", "v"), statistics=frozenset({"v"}))
    assert not output_partial(xent, (1, 2))
    assert statistics_groups(xent, (2, 2)) == [[0, 1], [2, 3]]


def test_merged_heads_shard_on_their_first_label():
    # o[b (h k)] <- x[b h k]: merging 4 heads of 3 into 12 features; a heads split is a contiguous range.
    merge = Space((Label("b", 2, Role.SAMPLE), Label("h", 4, Role.HEADS), Label("k", 3, Role.HIDDEN)),
                  ("b", Merged(("h", "k"))), (("b", "h", "k"),), config_labels=("b", "h"))
    assert tasks_output_boxes(merge, (1, 2)) == [((0, 2), (0, 6)), ((0, 2), (6, 12))]
    assert tasks_input_boxes(merge, (1, 2), 0) == [((0, 2), (0, 2), (0, 3)), ((0, 2), (2, 4), (0, 3))]
    assert output_axes(merge, (1, 2)) == (None, "h")
    assert local_shape(merge, (1, 2), merge.output) == (2, 6)
    split = Space(merge.labels, ("b", "h", "k"), (("b", Merged(("h", "k"))),), config_labels=("b", "h"))
    assert tasks_input_boxes(split, (2, 2), 0)[1] == ((0, 1), (6, 12))
    assert input_axes(split, (2, 2)) == (("b", "h"),)
    assert local_input_shape(split, (2, 2), 0) == (1, 6)
