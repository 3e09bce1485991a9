"""The worked example `examples/audio_features.py` (README "Hierarchical audio features"), fast variant.

The margins hold on seeds 0-3 (measured: the waveform model's burst mass inside the burst 0.000-0.013 against
a burst share of 0.19; the spectrogram model's 0.38-0.74 against 0.20; mass near a tone's frequency 0.26-0.32
against a band share of 0.15; a tone's half-mass time 0.43-0.47). Seed 0 runs in the default suite, seeds 1
and 2 with `-m slow`.
"""

import pytest
from helpers.examples import load_example


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_audio_example_answers_where_each_model_looks(tmp_path, seed, capsys):
    answer = load_example("audio_features").main(["--logdir", str(tmp_path), "--fast", "--seed", str(seed)])
    wave, spec = answer["waveform"], answer["spectrogram"]
    assert wave["val_accuracy"] >= 0.6 and spec["val_accuracy"] >= 0.9  # chance: 1/3
    for run in (wave, spec):
        assert list(run["depth"].index) == [f"conv{i}" for i in range(1, len(run["depth"]) + 1)]
        assert run["depth"].notna().all().all(), run["depth"]
        assert run["findings"].empty, run["findings"]
        assert run["where"]["tone"]["half_mass_time"] >= 0.4  # a tone's evidence is spread over the clip (0.5: even)
    assert wave["depth"].positions.tolist() == [1024, 256, 128, 64]
    # the waveform model calls a clip "burst" because the rest of it is quiet: no Grad-CAM mass in the burst,
    # and removing the burst leaves the prediction unchanged
    burst = wave["where"]["burst"]
    assert burst["mass_in_burst"] < 0.5 * burst["burst_share_of_time"], burst
    assert burst["p_burst_burst_removed"] > 0.9 and burst["p_burst_tone_outside"] < 0.5, burst
    # the spectrogram model looks inside the burst, and near a tone's frequency
    burst, tone = spec["where"]["burst"], spec["where"]["tone"]
    assert burst["mass_in_burst"] > 1.5 * burst["burst_share_of_time"], burst
    assert burst["half_mass_time"] < tone["half_mass_time"] - 0.1
    assert tone["mass_near_tone"] > 1.4 * tone["band_share"], tone
    printed = capsys.readouterr().out
    assert "mass_in_burst=" in printed and "probe_accuracy" in printed
    looks = sorted(p.name for p in (tmp_path / "spectrogram").iterdir() if "tfprobe-looks" in p.name)
    assert len(looks) == 1 and any("tfprobe-looks" in p.name for p in (tmp_path / "waveform").iterdir())
