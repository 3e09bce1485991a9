"""The example a user runs first: trains on the bundled digits and writes both runs."""

from helpers.examples import load_example

import tfprobe


def test_example_trains_and_writes_both_runs(tmp_path):
    example = load_example("train_digits")
    histories = example.train(str(tmp_path), epochs=2)
    assert set(histories) == {"relu", "sigmoid_deep"}
    layers = tfprobe.read_layers(tmp_path)
    relu = layers[layers.run == "relu"]
    assert relu.layer.tolist() == ["conv1", "pool1", "conv2", "pool2", "conv3", "gap", "dense1", "logits"]
    assert set(relu[relu.kind == "pooling"].layer) == {"pool1", "pool2", "gap"}
    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    # 1437 training examples, batch 64 -> 23 steps per epoch; log_freq=10 -> windows at 10, 20, 30, 40, 46.
    assert sorted(set(wide[wide.run == "relu"].step)) == [10, 20, 30, 40, 46]
    sig = wide[(wide.run == "sigmoid_deep") & (wide.layer == "dense4")]
    assert sig.saturation_fraction.notna().all()
    assert not tfprobe.read_histograms(tmp_path).empty
    # gradients: the sigmoid stack's error signal vanishes toward the input (the Gradient flow view)
    last = wide[(wide.run == "sigmoid_deep") & (wide.step == 46)].set_index("layer")
    assert last.grad_rms["conv1"] * 10 <= last.grad_rms["dense4"], last.grad_rms
    assert last.update_ratio[["conv1", "dense1", "logits"]].gt(0).all()
    # the reference set: measured at the end of training (46), dense1 embedded for the Projector
    assert sorted(set(tfprobe.read_cka(tmp_path).query("run == 'relu'").step)) == [46]
    assert (tmp_path / "relu" / "tfprobe_projector" / "dense1.tsv").exists()
