"""How the dashboard arranges layers: categories (by Keras class), blocks (by name), graph depth.

Pure functions over series metadata; the routes attach their results to every layer
(`/layers`, `/overview`) and `/runs` serves the category table, so the frontend and the tests
share one definition.

* **Category** (`category_of`): what kind of layer a Keras class is, from `CATEGORY_CLASSES`
  (`tfprobe.layer_kinds.CLASS_KINDS`);
  pooling series (metadata `kind == "pooling"`) are always `pooling`; unknown classes are `other`.
* **Block** (`assign_blocks`): a nested model is a block (its path prefix before the first `/`),
  split further by the rules below when its own layers fall into several named blocks; otherwise
  `BLOCK_RULES`, tried in order on the last path component, name the block; `mixedN`
  (InceptionV3) closes a block, so the unnamed layers before it join it; other unnamed layers
  join the block before them, or `stem` before the first named block and `head` after the last;
  when no rule matches any layer, the block is `model`.
* **Depth** (`graph_depths`): the longest path from an input through the metadata's `inputs`
  (the series that feed a series in the graph); None for every series when a run's metadata
  has no `inputs` (logs written before it was recorded).
"""

from __future__ import annotations

import re

from tfprobe import layer_kinds

# category -> Keras class names: tfprobe's one table of what Keras classes mean. The frontend's toggles and the
# tests read it via /runs.
CATEGORY_CLASSES = layer_kinds.CLASS_KINDS
CATEGORIES = tuple(CATEGORY_CLASSES) + ("other",)
CATEGORY_DESCRIPTIONS = {
    "normalization": "normalisation layers (BatchNormalization, LayerNormalization, ...)",
    "shape": "padding, reshape, identity-like and dropout layers",
    "activation": "activation-only layers (Activation, ReLU, Softmax, ...)",
    "pooling": "pooling layers",
    "convolution": "convolutions (Conv2D, DepthwiseConv2D, SeparableConv2D, ...)",
    "dense": "Dense, EinsumDense and Embedding layers",
    "attention": "attention layers",
    "recurrent": "recurrent layers (LSTM, GRU, ...)",
    "operation": "operations such as residual adds, multiplies and concatenations",
    "other": "any other class (Lambda, custom layers)",
}
_CLASS_CATEGORY = layer_kinds.CLASS_CATEGORY


def category_of(cls, kind="activation"):
    """The dashboard category of a series from its Keras class name and metadata `kind`.

    >>> category_of("BatchNormalization"), category_of("Add"), category_of("MyBlock")
    ('normalization', 'operation', 'other')
    >>> category_of("Lambda", kind="pooling")
    'pooling'
    """
    if kind == "pooling":
        return "pooling"
    return _CLASS_CATEGORY.get(cls, "other")


# (regex on the last path component, closes_block). Group `block` names the block. First match wins.
BLOCK_RULES = (
    # block_3_expand, block3a_se_reduce, conv2_block1_1_conv, convnext_tiny_stage_0_block_0_gelu,
    # transformer_block_2_attention, stage_2_block_1_conv
    (re.compile(r"^(?P<block>(?:.*?_)?block_?\d+[a-z]?)(?:_|$)"), False),
    (re.compile(r"^(?P<block>(?:.*?_)?stage_?\d+)(?:_|$)"), False),  # stage2_conv
    (re.compile(r"^(?P<block>expanded_conv(?:_\d+)?)(?:_|$)"), False),  # MobileNet's first blocks
    (re.compile(r"^(?P<block>(?:conv|pool)\d+)(?:_|$)"), False),  # ResNet/DenseNet conv1_*, pool2_*
    # stem_conv, top_bn, convnext_tiny_head_dense (a layer named just "head" is not a block)
    (re.compile(r"^(?P<block>(?:.*_)?(?:prestem|stem|head|top))_"), False),
    (re.compile(r"^(?P<block>mixed\d+)$"), True),  # InceptionV3: mixedN concatenates its block
)
STEM, HEAD, TOP_LEVEL = "stem", "head", "model"


def block_rule(name):
    """`(block, closes)` for a layer name by `BLOCK_RULES`, or `(None, False)`.

    >>> block_rule("block_3_expand_BN"), block_rule("conv2_block1_0_conv")
    (('block_3', False), ('conv2_block1', False))
    >>> block_rule("block3a_se_reduce"), block_rule("mixed5"), block_rule("dense_1")
    (('block3a', False), ('mixed5', True), (None, False))
    """
    for pattern, closes in BLOCK_RULES:
        m = pattern.match(name)
        if m:
            return m.group("block"), closes
    return None, False


def _blocks_by_rules(names):
    """Blocks of flat names by `BLOCK_RULES`, unnamed layers placed as the module docstring says."""
    labels = [block_rule(n) for n in names]
    out = [block for block, _ in labels]
    pending, prev = [], None  # unnamed layers since the last named one
    for i, (block, closes) in enumerate(labels):
        if block is None:
            pending.append(i)
            continue
        fill = block if closes else (STEM if prev is None else prev)
        for j in pending:
            out[j] = fill
        pending, prev = [], block
    for j in pending:
        out[j] = None if prev is None else HEAD  # None: no rule matched anywhere
    return out


def assign_blocks(names):
    """The block of each series name (in model order); see the module docstring for the rules.

    >>> assign_blocks(["Conv1", "block_1_expand", "block_1_add", "block_2_project", "out_relu"])
    ['stem', 'block_1', 'block_1', 'block_2', 'head']
    >>> assign_blocks(["conv2d", "conv2d_1", "mixed0", "conv2d_2", "mixed1", "avg_pool"])
    ['mixed0', 'mixed0', 'mixed0', 'mixed1', 'mixed1', 'head']
    >>> assign_blocks(["backbone/conv1", "backbone/relu", "dense"])
    ['backbone', 'backbone', 'model']
    """
    names = list(names)
    tops = [n.split("/", 1) for n in names]
    nested = {}
    for i, parts in enumerate(tops):
        if len(parts) == 2:
            nested.setdefault(parts[0], []).append(i)
    flat = [i for i, parts in enumerate(tops) if len(parts) == 1]
    out = [None] * len(names)
    by_rules = _blocks_by_rules([names[i] for i in flat])
    for i, block in zip(flat, by_rules):
        out[i] = block if block is not None else TOP_LEVEL
    for prefix, idx in nested.items():
        inner = assign_blocks([tops[i][1] for i in idx])
        split = len(set(inner) - {STEM, HEAD, TOP_LEVEL}) > 1  # several named blocks inside
        for i, block in zip(idx, inner):
            out[i] = f"{prefix}/{block}" if split else prefix
    return out


def graph_depths(series):
    """`{name: depth}`: the longest path from an input to each series through its `inputs`.

    `series` maps names to metadata dicts. A series without recorded sources, or whose sources
    were not recorded, has depth 0. Every depth is None when no series has `inputs`.

    >>> graph_depths({"a": {"inputs": []}, "b": {"inputs": ["a"]}, "c": {"inputs": ["a", "b"]}})
    {'a': 0, 'b': 1, 'c': 2}
    >>> graph_depths({"a": {}, "b": {}})
    {'a': None, 'b': None}
    """
    if not any(isinstance(info.get("inputs"), list) for info in series.values()):
        return {name: None for name in series}
    sources = {n: [s for s in info.get("inputs") or () if s in series and s != n] for n, info in series.items()}
    depth = dict.fromkeys(series, 0)
    # relax in model order (a topological order, so one pass usually settles it); at most n passes
    for _ in range(len(series)):
        changed = False
        for name, srcs in sources.items():
            d = 1 + max((depth[s] for s in srcs), default=-1)
            if d != depth[name]:
                depth[name], changed = d, True
        if not changed:
            break
    return depth
