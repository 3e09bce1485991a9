"""The worked examples of the README, fast variants: each runs its script's `main(["--fast", ...])` and
asserts the answer it prints. The margins hold for seeds 0, 1 and 2 (checked by hand with `--seed`): the
comments give the range measured over those seeds."""

from __future__ import annotations

import pytest
from helpers.examples import load_example


def run(name, tmp_path, seed=0):
    return load_example(name).main(["--fast", "--logdir", str(tmp_path), "--seed", str(seed)])


def test_sparse_codes_l1_buys_sparsity_and_costs_rank_and_reconstruction(tmp_path, capsys):
    rows = run("sparse_codes", tmp_path)
    none, weak, strong = rows["l1_none"], rows["l1_weak"], rows["l1_strong"]
    # Hoyer sparsity of the code at the last window: none 0.30-0.36, weak 0.68-0.75, strong 0.86-0.90
    assert weak["hoyer_sparsity"] > none["hoyer_sparsity"] + 0.2
    assert strong["hoyer_sparsity"] > weak["hoyer_sparsity"] + 0.05
    # exact zeros (none 0.26-0.31, strong 0.87-0.90); a ReLU code's near zeros are almost the same values
    assert strong["zero_fraction"] > none["zero_fraction"] + 0.4
    assert strong["near_zero_fraction"] >= strong["zero_fraction"]
    # the strong penalty kills code units (dead units +0.31 to +0.37) and lowers the code's effective rank
    # (strong / none: 0.39-0.61)
    assert strong["dead_unit_fraction"] > none["dead_unit_fraction"] + 0.2
    assert strong["effective_rank"] < 0.8 * none["effective_rank"]
    # and pays in reconstruction error (mean squared error without the penalty; strong / none: 1.7-2.1)
    assert strong["mse"] > 1.4 * none["mse"]
    assert "eff_rank" in capsys.readouterr().out


def test_pooling_information_max_keeps_more_mass_than_average(tmp_path, capsys):
    rows = run("pooling_information", tmp_path)
    mx, avg, strided = rows["max_pool"]["pooling"], rows["avg_pool"]["pooling"], rows["strided"]["pooling"]
    assert set(mx) == set(avg) == {"down1", "down2", "gap"} and set(strided) == {"gap"}
    for layer in ("down1", "down2"):
        assert mx[layer]["size_ratio"] == avg[layer]["size_ratio"] == 0.25
        # average pooling of a ReLU output keeps exactly its size ratio of the mass; max pooling keeps more
        assert avg[layer]["mass_retention"] == pytest.approx(0.25, abs=1e-3)
        assert mx[layer]["mass_retention"] > avg[layer]["mass_retention"] + 0.1  # max: 0.41-0.49
        assert mx[layer]["energy_retention"] > 1.5 * avg[layer]["energy_retention"]  # 0.48-0.60 / 0.19-0.22
    funnels = {run: r["funnel"] for run, r in rows.items()}
    elements = {run: [f["elements"] for f in funnel] for run, funnel in funnels.items()}
    assert elements["max_pool"] == elements["avg_pool"] == elements["strided"] == [1024, 256, 512, 128, 256, 64, 10]
    # the cumulative mass at the head: 0.047-0.052 (e.g. 0.41 * 0.46 * 0.25) against 0.25 ** 3
    assert funnels["max_pool"][-1]["cumulative_mass"] > 2 * funnels["avg_pool"][-1]["cumulative_mass"]
    assert funnels["avg_pool"][-1]["cumulative_mass"] == pytest.approx(0.25**3, rel=1e-2)
    assert "depth funnel" in capsys.readouterr().out


def test_find_the_bug_fails_each_broken_run_at_its_layer(tmp_path, capsys):
    rows = run("find_the_bug", tmp_path)
    healthy, dying, sigmoid, lr = (rows[r] for r in ("healthy", "dying_relu", "saturated_sigmoid", "exploding_lr"))
    # `tfprobe report --fail-on warning` passes the healthy run and fails every broken one
    assert healthy["exit_status"] == 0 and healthy["kinds"] == {}
    assert dying["exit_status"] == sigmoid["exit_status"] == lr["exit_status"] == 1
    # the dead layer is the one with the bad bias (the layer above it dies of it)
    assert (dying["culprit"], dying["culprit_kind"]) == ("hidden2", "dead_layer")
    assert dying["kinds"]["dead_layer"] == ["hidden2", "hidden3"]
    # every sigmoid layer saturates, from the first window
    assert (sigmoid["culprit"], sigmoid["culprit_kind"], sigmoid["first_step"]) == ("hidden1", "saturation", 5)
    assert sigmoid["kinds"]["saturation"] == ["hidden1", "hidden2", "hidden3"]
    # the learning rate: every layer's updates are too large before anything else goes wrong, then the
    # activations explode (std x1e3 or more in one window) and turn to NaN
    assert lr["culprit_kind"] == "unstable_updates"
    assert lr["kinds"]["unstable_updates"] == ["hidden1", "hidden2", "hidden3", "logits"]
    assert len(lr["kinds"]["exploding_time"]) >= 3 and "nan_inf" in lr["kinds"]
    assert lr["first_steps"]["unstable_updates"] < lr["first_steps"]["exploding_time"] <= lr["first_steps"]["nan_inf"]
    # then the weights of every layer are NaN; the fused ReLUs output zeros for them, which is not a dead layer
    assert lr["kinds"]["nan_weights"] == ["hidden1", "hidden2", "hidden3", "logits"] and "dead_layer" not in lr["kinds"]
    assert lr["first_steps"]["exploding_time"] <= lr["first_steps"]["nan_weights"]
    # incidents: one per broken run, at the planted bug's layer and first window, none for the healthy run;
    # the probe found the same ones while training (`probe.incidents`)
    roots = {
        run: [(i["root_layer"], i["root_kind"], i["first_step"]) for i in r["incidents"]] for run, r in rows.items()
    }
    assert roots == {
        "healthy": [],
        "dying_relu": [("hidden2", "dead_layer", 5)],
        "saturated_sigmoid": [("hidden1", "saturation", 5)],
        "exploding_lr": [("hidden1", "unstable_updates", 5)],
    }
    live = {
        run: [(i["root_layer"], i["root_kind"], i["first_step"]) for i in r["live_incidents"]]
        for run, r in rows.items()
    }
    assert live == roots
    # the learning-rate incident explains every other finding of its run, and ends in errors (NaN weights)
    (inc,) = lr["incidents"]
    assert inc["severity"] == "error" and set(inc["kinds"]) == set(lr["kinds"])
    assert "learning rate" in inc["fix"]
    assert "hidden2" in dying["incidents"][0]["fix"]
    out = capsys.readouterr()
    assert "culprit" in out.out and "Incidents" in out.out
