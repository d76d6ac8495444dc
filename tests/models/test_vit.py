"""ViT-B/16 in the zoo: the published parameter count and its forward FLOPs at 224x224."""

from models.zoo import FamilyOptions, build_graph


def test_vit_b16_is_the_published_model():
    graph = build_graph("vit_b16", "imagenet", 2)
    assert graph.param_count == 86_567_656
    assert len(graph) == 8 + 16 * 12  # patches, tokens, cls, pos, ln_f, class_token, head, loss; 16 ops a block
    assert graph.op("pos").param_shapes == (("embedding", (197, 768)),)
    assert graph.op("class_token").output_shape == (2, 768) and graph.op("head").output_shape == (2, 1000)
    # 35.2 GFLOP an image forward: twice the 17.6 G multiply-adds usually quoted for ViT-B/16.
    assert round(graph.forward_flops / 2 / 1e8) == 352


def test_vit_b16_at_tiny_imagenet_has_a_position_per_patch():
    graph = build_graph("vit_b16", "tiny-imagenet", 2)
    assert graph.op("pos").param_shapes == (("embedding", (17, 768)),)  # 64/16 squared + the class token
    assert graph.op("head").output_shape == (2, 200)


def test_a_smaller_vit_has_the_sizes_asked_and_an_mlp_four_times_its_width():
    graph = build_graph("vit_b16", "tiny-imagenet", 2, FamilyOptions(depth=2, width=64, heads=4))
    d, blocks = 64, 2
    block = 2 * 2 * d + 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)  # norms, q k v proj, MLP
    assert graph.param_count == (16 * 16 * 3 * d + d) + d + 17 * d + blocks * block + 2 * d + (d * 200 + 200)
    assert graph.op("encoder1.q_heads").output_shape == (2, 17, 4, 16)
    assert len(graph) == 8 + 16 * blocks
