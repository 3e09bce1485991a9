"""The dashboard's arrangement of layers (`tensorboard_plugin_tfprobe.layout`): categories by Keras
class, blocks by name on the real layer names of keras.applications models, graph depth."""

from __future__ import annotations

import itertools

import pytest

from tensorboard_plugin_tfprobe import layout

# application -> (input shape, expected blocks in model order, spot checks {layer: block})
APPLICATIONS = {
    "MobileNetV2": (
        (32, 32, 3),
        ["stem", "expanded_conv"] + [f"block_{i}" for i in range(1, 17)] + ["head"],
        {"Conv1": "stem", "block_3_depthwise_BN": "block_3", "block_4_add": "block_4", "predictions": "head"},
    ),
    "ResNet50": (
        (32, 32, 3),
        ["conv1", "pool1"]
        + [f"conv{s}_block{b}" for s, n in ((2, 3), (3, 4), (4, 6), (5, 3)) for b in range(1, n + 1)]
        + ["head"],
        {
            "conv1_pad": "conv1",
            "conv2_block1_0_conv": "conv2_block1",
            "conv4_block6_out": "conv4_block6",
            "avg_pool": "head",
        },
    ),
    "DenseNet121": (
        (32, 32, 3),
        ["stem", "conv1", "pool1"]
        + [
            blk
            for s, n in ((2, 6), (3, 12), (4, 24), (5, 16))
            for blk in [f"conv{s}_block{b}" for b in range(1, n + 1)] + ([f"pool{s}"] if s < 5 else [])
        ]
        + ["head"],
        {"zero_padding2d": "stem", "pool2_conv": "pool2", "conv3_block12_concat": "conv3_block12", "bn": "head"},
    ),
    "EfficientNetB0": (
        (32, 32, 3),
        ["stem"]
        + [f"block{s}{c}" for s, n in ((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 1)) for c in "abcd"[:n]]
        + ["top", "head"],
        {"rescaling": "stem", "stem_conv": "stem", "block2b_se_excite": "block2b", "top_bn": "top"},
    ),
    "ConvNeXtTiny": (
        (32, 32, 3),
        None,
        {
            "convnext_tiny_stage_2_block_5_gelu": "convnext_tiny_stage_2_block_5",
            "convnext_tiny_downsampling_block_1/convnext_tiny_downsampling_conv_1": "convnext_tiny_downsampling_block_1",
            "convnext_tiny_head_dense": "convnext_tiny_head",
        },
    ),
    "InceptionV3": (
        (75, 75, 3),
        [f"mixed{i}" for i in range(11)] + ["head"],
        {"conv2d": "mixed0", "mixed9_0": "mixed9", "mixed9_1": "mixed10", "predictions": "head"},
    ),
}


def _walk(model, prefix=""):
    """(series-like name, class) of every layer, nested models entered (`outer/inner`), as tfprobe does."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer, prefix + layer.name + "/")
        elif type(layer).__name__ != "InputLayer":
            yield prefix + layer.name, type(layer).__name__


@pytest.fixture(scope="module")
def application_layers():
    """{application: [(name, class)]}, each model built once without weights."""
    import keras

    out = {}
    for app, (shape, _, _) in APPLICATIONS.items():
        keras.backend.clear_session()
        out[app] = list(_walk(getattr(keras.applications, app)(weights=None, input_shape=shape)))
    return out


@pytest.mark.slow  # builds six keras.applications models (about 15 s)
@pytest.mark.parametrize("app", list(APPLICATIONS))
def test_every_layer_of_keras_applications_gets_a_sensible_block(application_layers, app):
    names = [n for n, _ in application_layers[app]]
    blocks = layout.assign_blocks(names)
    assert all(isinstance(b, str) and b for b in blocks)
    runs = [b for b, _ in itertools.groupby(blocks)]
    assert len(runs) == len(set(runs)), f"a block is split: {runs}"  # every block is one contiguous run
    expected = APPLICATIONS[app][1]
    if expected is not None:
        assert runs == expected
    else:  # ConvNeXtTiny: 3+3+9+3 blocks, 3 downsampling blocks, prestem, stem, head
        assert sum("_stage_" in b for b in runs) == 18 and sum("downsampling" in b for b in runs) == 3
        assert len(runs) == 24
    by_name = dict(zip(names, blocks))
    for layer, block in APPLICATIONS[app][2].items():
        assert by_name[layer] == block, layer
    # no block swallows the network: the largest holds well under a fifth of the layers
    assert max(blocks.count(b) for b in set(blocks)) < len(names) / 5


@pytest.mark.slow
def test_every_application_class_has_a_category(application_layers):
    classes = {c for layers in application_layers.values() for _, c in layers}
    other = {c for c in classes if layout.category_of(c) == "other"}
    assert other == set(), other
    counts = {}
    for _, c in application_layers["DenseNet121"]:
        counts[layout.category_of(c)] = counts.get(layout.category_of(c), 0) + 1
    assert counts["normalization"] == 121 and counts["operation"] == 58  # BN and the concatenations


def test_category_table_is_one_mapping():
    seen = {}
    for category, classes in layout.CATEGORY_CLASSES.items():
        for cls in classes:
            assert cls not in seen, f"{cls} in {seen.get(cls)} and {category}"
            seen[cls] = category
            assert layout.category_of(cls) == category
    assert set(layout.CATEGORY_DESCRIPTIONS) == set(layout.CATEGORIES)
    assert layout.category_of("Conv2D", kind="pooling") == "pooling"  # the recorder's pooling kind wins


def test_nested_models_are_blocks_split_only_when_they_hold_several():
    names = [
        "backbone/Conv1",
        "backbone/block_1_expand",
        "backbone/block_1_add",
        "backbone/block_2_project",
        "backbone/out_relu",
        "small/conv",
        "small/relu",
        "dense",
        "predictions",
    ]
    assert layout.assign_blocks(names) == [
        "backbone/stem",
        "backbone/block_1",
        "backbone/block_1",
        "backbone/block_2",
        "backbone/head",
        "small",
        "small",
        "model",
        "model",
    ]
    # a one-block nested model stays one block under its own name
    assert layout.assign_blocks(["stem/stem_conv", "stem/stem_bn", "block_1_a"]) == ["stem", "stem", "block_1"]


@pytest.mark.parametrize(
    "name, block",
    [
        ("transformer_block_3_attention", "transformer_block_3"),
        ("stage_2_block_1_conv", "stage_2_block_1"),
        ("stage2_conv", "stage2"),
        ("expanded_conv_2_project", "expanded_conv_2"),
        ("mixed10", "mixed10"),
        ("dense_3", None),
        ("blockade", None),
    ],
)
def test_block_rules(name, block):
    assert layout.block_rule(name)[0] == block


def test_graph_depth_is_the_longest_path_through_inputs():
    # a residual block: x -> conv -> bn -> add(x, bn); the add is at depth 3, not 1
    series = {
        "stem": {"inputs": []},
        "conv": {"inputs": ["stem"]},
        "bn": {"inputs": ["conv"]},
        "add": {"inputs": ["stem", "bn"]},
        "head": {"inputs": ["add", "unrecorded"]},
    }
    assert layout.graph_depths(series) == {"stem": 0, "conv": 1, "bn": 2, "add": 3, "head": 4}
    # out of model order and with a (malformed) cycle: still finite
    assert layout.graph_depths({"b": {"inputs": ["a"]}, "a": {"inputs": []}}) == {"b": 1, "a": 0}
    cyc = layout.graph_depths({"a": {"inputs": ["b"]}, "b": {"inputs": ["a"]}})
    assert all(isinstance(d, int) for d in cyc.values())
    assert layout.graph_depths({"a": {"inputs": None}}) == {"a": None}
