"""The worked example `examples/frozen_backbone.py` (README "Frozen backbone"), fast variant.

Measured on seeds 0-2 (fast): the probe accuracy of the pretrained backbone peaks at depth 1-3 with
0.65-0.93 (chance 0.25), 0.13-0.53 above its last layer's; the head's dense layer is within 0.07 of that last
layer. The margins below hold on all three. Seed 0 runs in the default suite, seeds 1 and 2 with `-m slow`.
"""

import pytest
from helpers.examples import load_example


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_backbone_example_finds_where_the_frozen_layers_know_the_new_task(tmp_path, seed, capsys):
    example = load_example("frozen_backbone")
    answer = example.main(["--logdir", str(tmp_path), "--fast", "--seed", str(seed)])
    table = answer["table"]
    layers = [name for name in table.index if name not in example.HEAD]
    assert layers[0] == "Conv1_relu" and layers[-1] == "out_relu" and len(layers) == 19
    assert list(table.index[-2:]) == list(example.HEAD) and table.depth.tolist() == list(range(21))
    assert table.notna().all().all(), table
    assert answer["val_accuracy"]["task_a_pretraining"] >= 0.4  # measured 0.46-0.90 (chance 0.25)
    # the early blocks know the new orientations best; the top has specialised to task A's four
    assert answer["peak_depth"] <= 6 and answer["peak_accuracy"] >= 0.6, answer
    assert answer["peak_accuracy"] >= answer["last_backbone_accuracy"] + 0.1, answer
    # the head, reading the last layer only, does not get past what that layer offers a linear probe
    assert abs(answer["head_accuracy"]["head_dense"] - answer["last_backbone_accuracy"]) <= 0.12, answer
    printed = capsys.readouterr().out
    assert f"peaks at depth {answer['peak_depth']} ({answer['peak_layer']})" in printed
