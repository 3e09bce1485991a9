"""Hierarchical audio features: what each depth of an audio classifier computes, and where in time it looks.

Question: on synthetic audio of three classes (steady tones, rising chirps,
short noise bursts over faint background noise), how do activation
statistics change with depth, and does the classifier look where the
evidence is: inside the burst for a noise burst, spread over the clip for a
tone? Two models answer it, each a run under one log directory:

* `waveform`: a Conv1D network on the raw signal (Grad-CAM over time);
* `spectrogram`: a Conv2D network on its log-magnitude STFT (Grad-CAM over
  time x frequency).

    python examples/audio_features.py --logdir logs/audio     # under a minute on 2 busy CPU cores
    tensorboard --logdir logs/audio --samples_per_plugin=images=0   # tfprobe tab: Looks, Layer, Representations

It prints, per run: the validation accuracy; per conv layer (in depth order)
its positions, the mean activation, `zero_fraction` and `hoyer_sparsity` of
the last logged window and the linear `probe_accuracy` of the last
reference step (`tfprobe.read_logdir`); the health findings
(`tfprobe.diagnose`); and, per class, where Grad-CAM mass falls
(`tfprobe.cam.grad_cam` on the held-out reference clips): the share of the
time positions that hold half of the mass (`half_mass_time`, 0.5 = even),
for bursts the share of the mass inside the burst against the burst's share
of the clip, for tones (spectrogram model) the share within two frequency
bins of the tone against the band's share of the bins, and an occlusion
check of the bursts (p(burst) as is, with the burst replaced by background
noise, with a tone added outside it). `main()` returns the same numbers.

The data is generated with NumPy from a fixed seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import tfprobe
from tfprobe import cam

CLASSES = ("tone", "chirp", "burst")
RATE = 1024  # samples per second: a clip of 1 s is 1024 samples
FRAME, HOP = 64, 16  # STFT frame length and step (samples): 61 frames x 33 frequency bins


# ---------------------------------------------------------------- data


def make_clips(n, seed=0, length=RATE):
    """`n` clips `(n, length)` float32 with labels `(n,)` and, per clip, `(burst_start, burst_end, tone_hz)`.

    Classes in turn: a tone (constant frequency 40-400 Hz, random phase), a
    linear chirp (from 20-100 Hz up to 250-480 Hz), a noise burst (white
    noise over 1/8-1/4 of the clip at a random place). Every clip has
    background noise of rms 0.05 and a random gain in [0.5, 1]. `burst_*`
    are -1 and `tone_hz` 0 where they do not apply.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / RATE
    x = rng.normal(0, 0.05, (n, length))
    labels = np.arange(n) % len(CLASSES)
    info = np.zeros((n, 3))
    info[:, :2] = -1
    for i, label in enumerate(labels):
        gain = rng.uniform(0.5, 1.0)
        if label == 0:
            info[i, 2] = rng.uniform(40, 400)
            x[i] += gain * np.sin(2 * np.pi * info[i, 2] * t + rng.uniform(0, 2 * np.pi))
        elif label == 1:
            f0, f1 = rng.uniform(20, 100), rng.uniform(250, 480)
            x[i] += gain * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2) + rng.uniform(0, 2 * np.pi))
        else:
            width = int(rng.uniform(length / 8, length / 4))
            start = int(rng.integers(0, length - width))
            x[i, start : start + width] += gain * rng.normal(0, 0.7, width)
            info[i, :2] = start, start + width
    return x.astype("float32"), labels.astype("int32"), info


def spectrogram(x):
    """Log-magnitude STFT `(n, frames, bins, 1)` of clips `(n, T)` (`tf.signal.stft`, Hann window)."""
    s = tf.abs(tf.signal.stft(x, frame_length=FRAME, frame_step=HOP, fft_length=FRAME))
    return tf.math.log(s + 1e-3).numpy()[..., None].astype("float32")


def frame_interval(start, end):
    """The STFT frames whose centre lies in samples `[start, end)`."""
    centres = np.arange(1 + (RATE - FRAME) // HOP) * HOP + FRAME / 2
    inside = np.flatnonzero((centres >= start) & (centres < end))
    return (inside[0], inside[-1] + 1) if len(inside) else (0, 0)


# ---------------------------------------------------------------- models


def _compile(model):
    model.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def waveform_model(shape=(RATE, 1)):
    """Four Conv1D stages (16-64 channels; kernel 33 first, about one period of 30 Hz, then 9), max pooling between."""
    layers = [keras.Input(shape)]
    for i, channels in enumerate((16, 32, 64, 64)):
        layers.append(
            keras.layers.Conv1D(channels, 33 if i == 0 else 9, padding="same", activation="relu", name=f"conv{i + 1}")
        )
        if i < 3:
            layers.append(keras.layers.MaxPooling1D(4 if i == 0 else 2, name=f"pool{i + 1}"))
    layers += [keras.layers.GlobalAveragePooling1D(name="gap"), keras.layers.Dense(len(CLASSES), name="logits")]
    return _compile(keras.Sequential(layers, name="waveform"))


def spectrogram_model(shape):
    """Three Conv2D stages (16-64 channels, 3x3) on `(frames, bins, 1)` spectrograms."""
    layers = [keras.Input(shape)]
    for i, channels in enumerate((16, 32, 64)):
        layers.append(keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"conv{i + 1}"))
        if i < 2:
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i + 1}"))
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(len(CLASSES), name="logits")]
    return _compile(keras.Sequential(layers, name="spectrogram"))


# ---------------------------------------------------------------- the answer


def depth_table(logdir, run):
    """Per conv layer of `run` in model order: positions; mean, zero_fraction, hoyer_sparsity of the last window;
    probe_accuracy of the last reference step (all from `tfprobe.read_logdir`)."""
    layers = tfprobe.read_layers(logdir).query("run == @run").sort_values("order").set_index("layer")
    convs = [layer for layer in layers.index if layer.startswith("conv")]
    wide = tfprobe.read_logdir(logdir, pivot=True).query("run == @run")
    last = wide[wide.step == wide.step.max()].set_index("layer")
    reference = wide.dropna(subset=["probe_accuracy"])
    latest = reference[reference.step == reference.step.max()].set_index("layer")
    table = last.loc[convs, ["mean", "zero_fraction", "hoyer_sparsity"]]
    table.insert(0, "positions", [int(np.prod(layers["shape"][c][1:-1])) for c in convs])
    table["probe_accuracy"] = latest.probe_accuracy.reindex(convs)
    return table


def half_mass_time(maps):
    """Per map, the share of time positions that hold half of its mass, heaviest first (0.5: even), `(N,)`."""
    mass = maps.reshape(len(maps), maps.shape[1], -1).sum(axis=2)
    ordered = -np.sort(-mass, axis=1)
    needed = (np.cumsum(ordered, axis=1) < 0.5 * mass.sum(axis=1, keepdims=True)).sum(axis=1) + 1
    return needed / mass.shape[1]


def where_it_looks(maps, labels, intervals, tone_band=None):
    """Per class: Grad-CAM mass share inside the burst interval, the interval's share of time, spread, tone band.

    `maps` `(N, T, ...)` (time first), `intervals` `(N, 2)` burst intervals
    on the maps' time axis; `tone_band(i)` the frequency bins around clip
    `i`'s tone (spectrogram maps only).
    """
    total = maps.reshape(len(maps), -1).sum(axis=1)
    keep = total > 0  # an all-zero map has no mass to place
    answer = {}
    for c, name in enumerate(CLASSES):
        rows = np.flatnonzero((labels == c) & keep)
        entry = {"clips": len(rows), "half_mass_time": float(half_mass_time(maps[rows]).mean())}
        if name == "burst":
            inside = [maps[i, a:b].sum() / total[i] for i, (a, b) in zip(rows, intervals[rows].astype(int))]
            entry["mass_in_burst"] = float(np.mean(inside))
            entry["burst_share_of_time"] = float(np.mean((intervals[rows, 1] - intervals[rows, 0]) / maps.shape[1]))
        if name == "tone" and tone_band is not None:
            entry["mass_near_tone"] = float(np.mean([maps[i][:, tone_band(i)].sum() / total[i] for i in rows]))
            entry["band_share"] = float(np.mean([len(tone_band(i)) / maps.shape[2] for i in rows]))
        answer[name] = entry
    return answer


def tone_bins(hz, width=2):
    """The STFT bins within `width` bins of a tone of `hz` Hz."""
    centre = int(round(hz * FRAME / RATE))
    return np.arange(max(0, centre - width), min(FRAME // 2 + 1, centre + width + 1))


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def occlusion(model, features, clips, labels, info, seed=0):
    """Mean p(burst) on the burst clips as they are, with the burst replaced by background noise, and with a
    200 Hz tone (amplitude 0.7) added outside the burst: what the model's "burst" really depends on."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(labels == CLASSES.index("burst"))
    muted, toned = clips[rows].copy(), clips[rows].copy()
    tone = 0.7 * np.sin(2 * np.pi * 200 * np.arange(clips.shape[1]) / RATE)
    for k, (a, b) in enumerate(info[rows, :2].astype(int)):
        muted[k, a:b] = rng.normal(0, 0.05, b - a)
        outside = np.ones(clips.shape[1], bool)
        outside[a:b] = False
        toned[k, outside] += tone[outside]
    p = {
        name: softmax(model(features(c), training=False).numpy())[:, CLASSES.index("burst")].mean()
        for name, c in (("as_is", clips[rows]), ("burst_removed", muted), ("tone_outside", toned))
    }
    return {f"p_burst_{name}": float(v) for name, v in p.items()}


# ---------------------------------------------------------------- training


def waveform(clips):
    return clips[..., None]


RUNS = {"waveform": (waveform, waveform_model), "spectrogram": (spectrogram, spectrogram_model)}


def train_run(logdir, run, model, train, reference, epochs, looks_examples):
    """Trains `model` with a `LayerProbe` (representations and Looks on `reference`; spectrograms drawn with time
    across and low frequencies at the bottom); returns val accuracy."""
    x, y = train
    probe = tfprobe.LayerProbe(
        os.path.join(logdir, run),
        record_freq=2,
        log_freq=10,
        histogram_freq=10,
        reference_data=reference,
        reference_freq=max(1, epochs // 3),
        looks_examples=looks_examples,
        looks_input_kind="spectrogram" if run == "spectrogram" else "auto",
    )
    history = model.fit(x, y, validation_data=reference, batch_size=32, epochs=epochs, verbose=0, callbacks=[probe])
    return float(history.history["val_accuracy"][-1])


def study(logdir, run, clips, labels, info, n_train, epochs):
    """Trains one run on the first `n_train` clips, then answers the question on the others (the reference)."""
    features, build = RUNS[run]
    x = features(clips)
    model = build(x.shape[1:])
    reference = (x[n_train:], labels[n_train:])
    accuracy = train_run(
        logdir, run, model, (x[:n_train], labels[:n_train]), reference, epochs, looks_examples=6
    )  # two clips of each class (classes alternate)
    ref_clips, ref_labels, ref_info = clips[n_train:], labels[n_train:], info[n_train:]
    maps = cam.grad_cam(model, reference[0])  # at the last conv layer, upsampled to the input's time (x frequency)
    if run == "waveform":
        where = where_it_looks(maps, ref_labels, ref_info[:, :2])
    else:
        frames = np.array([frame_interval(a, b) for a, b in ref_info[:, :2]])
        where = where_it_looks(maps, ref_labels, frames, tone_band=lambda i: tone_bins(ref_info[i, 2]))
    where["burst"].update(occlusion(model, features, ref_clips, ref_labels, ref_info))
    findings = tfprobe.diagnose(
        tfprobe.read_logdir(logdir).query("run == @run"), tfprobe.read_layers(logdir).query("run == @run")
    )
    return {
        "val_accuracy": accuracy,
        "depth": depth_table(logdir, run),
        "where": where,
        "findings": findings[findings.severity != "info"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs/audio")
    parser.add_argument("--fast", action="store_true", help="the CI variant: fewer clips and epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_train, n_ref, epochs = (300, 150, 6) if args.fast else (900, 240, 10)
    start = time.monotonic()
    clips, labels, info = make_clips(n_train + n_ref, seed=args.seed)
    answer = {}
    for run in RUNS:
        keras.utils.set_random_seed(args.seed)
        answer[run] = study(args.logdir, run, clips, labels, info, n_train, epochs)
    answer["seconds"] = time.monotonic() - start
    report(answer)
    return answer


def report(answer):
    for run in RUNS:
        a = answer[run]
        print(f"\n== {run}: val_accuracy {a['val_accuracy']:.3f}")
        print("per conv layer (last window; probe_accuracy: last reference step):")
        print(a["depth"].round(3).to_string())
        print("where Grad-CAM mass falls (reference clips, per class):")
        for name, entry in a["where"].items():
            print(
                f"  {name:6s} "
                + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items())
            )
        print(f"findings (warning or error): {len(a['findings'])}")
        if len(a["findings"]):
            print(a["findings"][["layer", "kind", "severity", "message"]].to_string(index=False))
    print(f"\n{answer['seconds']:.0f} s")


if __name__ == "__main__":
    main()
