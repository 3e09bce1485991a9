"""Diagnosis rules learned from real user code (issue 23): each on a small model that shows it, with real
`fit`, and where it matters a precondition showing the rule is what keeps the model silent (or the fault
found).

The models are shrunk from official Keras examples (keras-io): the text-classification Transformer
(`nlp/text_classification_with_transformer.py`), the VAE decoder (`generative/vae.py`), squeeze-and-excite as
in EfficientNet (`keras.applications`), DCGAN (`generative/dcgan_overriding_train_step.py`) and knowledge
distillation (`vision/knowledge_distillation.py`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers.models import GAN

import tfprobe
from tfprobe import findings

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
L = keras.layers


def fit(model, x, y, log_dir, steps=4, batch_size=8, gradients=False, log_freq=1, **fit_kwargs):
    """`steps` steps of `model.fit` under `LayerProbe(record_freq=1, log_freq=log_freq)`."""
    probe = tfprobe.LayerProbe(
        log_dir, record_freq=1, log_freq=log_freq, histogram_freq=0, kernel="graph", gradients=gradients
    )
    n = steps * batch_size
    args = (x[:n],) if y is None else (x[:n], y[:n] if not isinstance(y, dict) else {k: v[:n] for k, v in y.items()})
    model.fit(*args, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[probe], **fit_kwargs)
    return log_dir


def diagnose(log_dir):
    """Findings of `log_dir`; no warning of `diagnose` allowed (the layers frame is there). (Under a custom
    `train_step` the reader may warn about steps written again: the step counter's business, not this file's.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tfprobe.diagnose", category=RuntimeWarning)
        return tfprobe.diagnose(str(log_dir))


def not_info(result):
    return result[result["severity"] != "info"]


def table(result):
    return result[["layer", "kind", "severity", "message"]].to_string()


def wide(log_dir):
    return tfprobe.read_logdir(log_dir, pivot=True)


def last(log_dir, layer, stat):
    w = wide(log_dir)
    return float(w.loc[w["layer"] == layer, stat].dropna().iloc[-1])


# ------------------------------------------------------------------ blocks that end in a normalisation


class TokenAndPositionEmbedding(L.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = L.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = L.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = keras.ops.arange(start=0, stop=keras.ops.shape(x)[-1], step=1)
        return self.token_emb(x) + self.pos_emb(positions)


class TransformerBlock(L.Layer):
    """The example's block: its last operation is a LayerNormalization, its class says nothing of it."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = L.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([L.Dense(ff_dim, activation="relu"), L.Dense(embed_dim)])
        self.layernorm1 = L.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = L.LayerNormalization(epsilon=1e-6)
        self.dropout1, self.dropout2 = L.Dropout(rate), L.Dropout(rate)

    def call(self, inputs):
        out1 = self.layernorm1(inputs + self.dropout1(self.att(inputs, inputs)))
        return self.layernorm2(out1 + self.dropout2(self.ffn(out1)))


def test_a_block_ending_in_a_normalisation_is_judged_by_its_output(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = L.Input(shape=(16,))
    x = TokenAndPositionEmbedding(16, 500, 16, name="embedding")(inputs)
    x = TransformerBlock(16, 2, 16, name="block")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(inputs, L.Dense(2, activation="softmax", name="predictions")(L.Dense(8, activation="relu")(x)))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 500, (32, 16))
    fit(model, x, x[:, 0] % 2, tmp_path)
    # the precondition: the block's std is >10x its input's (Keras' embeddings start within +-0.05)
    assert last(tmp_path, "block", "std") / last(tmp_path, "embedding", "std") > 10
    assert abs(last(tmp_path, "block", "mean")) < 0.05 and 0.9 < last(tmp_path, "block", "std") < 1.1
    result = diagnose(tmp_path)
    assert not_info(result).empty, table(result)


def test_unit_scale_outputs_are_not_depth_findings_whatever_the_class():
    rows = [
        ("r", s, 0.0, layer, stat, v)
        for s in (1, 2, 3)
        for layer, stats in {
            "emb": {"mean": 0.0, "std": 0.03},
            "block": {"mean": 0.01, "std": 1.0},
            "big": {"mean": 0.01, "std": 12.0},
            "head": {"mean": 0.0, "std": 12.0},
        }.items()
        for stat, v in stats.items()
    ]
    df = pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])
    layers = pd.DataFrame(
        {
            "run": "r",
            "layer": ["emb", "block", "big", "head"],
            "order": range(4),
            "class": "Block",
            "inputs": [[], ["emb"], ["block"], ["big"]],
            "shape": [[None, 8]] * 4,
        }
    )
    result = tfprobe.diagnose(df, layers)
    assert {(l, k) for l, k in zip(result["layer"], result["kind"])} == {("big", "exploding_depth")}, table(result)


# ------------------------------------------------------------------ what a healthy init explains


def test_a_glorot_dense_widening_from_2_to_3136_units_is_healthy(tmp_path):
    """The VAE decoder's first Dense: Glorot's variance 2 / (2 + 3136) shrinks the std ~28x by design."""
    keras.utils.set_random_seed(0)
    latent = keras.Input(shape=(2,))
    z = L.Activation("linear", name="z")(latent)  # the encoder's sampled z, recorded
    x = L.Reshape((7, 7, 64))(L.Dense(7 * 7 * 64, activation="relu", name="dense")(z))
    x = L.Conv2DTranspose(8, 3, activation="relu", strides=2, padding="same", name="deconv")(x)
    model = keras.Model(latent, L.Conv2DTranspose(1, 3, activation="sigmoid", padding="same", name="out")(x))
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    fit(
        model,
        rng.normal(size=(32, 2)).astype("float32"),
        (rng.random((32, 14, 14, 1)) < 0.2).astype("float32"),
        tmp_path,
    )
    assert last(tmp_path, "z", "std") / last(tmp_path, "dense", "std") > 10  # the precondition
    result = diagnose(tmp_path)
    assert not_info(result).empty, table(result)


def test_the_same_shrink_without_the_widening_is_vanishing_depth():
    def run(width):
        rows = [
            ("r", s, 0.0, layer, "std", v)
            for s in (1, 2)
            for layer, v in (("z", 1.0), ("dense", 0.025), ("head", 0.025))
        ]
        layers = pd.DataFrame(
            {
                "run": "r",
                "layer": ["z", "dense", "head"],
                "order": range(3),
                "inputs": [[], ["z"], ["dense"]],
                "shape": [[None, 2], [None, width], [None, width]],
            }
        )
        return tfprobe.diagnose(
            pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"]), layers
        )

    assert run(3136).empty
    found = run(2)
    assert found[["layer", "kind"]].values.tolist() == [["dense", "vanishing_depth"]]
    assert "40x" in found["message"].iloc[0]


def residual_blocks(blocks=3, width=16, branch_std=0.01):
    """`benchmarks/live_incidents.py --model residual`'s blocks: `x + Dense(Dense(LayerNormalization(x), relu))`,
    the second Dense initialised small (GPT-2's, Fixup's residual branches), the model's input the first skip."""
    inp = keras.Input((width,))
    x = inp
    for i in range(blocks):
        h = L.Dense(width, activation="relu", name=f"up{i}")(L.LayerNormalization(name=f"norm{i}")(x))
        h = L.Dense(width, name=f"down{i}", kernel_initializer=keras.initializers.RandomNormal(stddev=branch_std))(h)
        x = L.Add(name=f"add{i}")([x, h])
    return keras.Model(inp, x)


def test_a_small_init_residual_branch_and_the_first_addition_are_healthy(tmp_path):
    """The residual benchmark model gave `vanishing_depth` at its branches' last Dense (`down0`: 10-13x below
    `up0`, true by the numbers, measured below without the probe) and `exploding_depth` at the first addition
    (`add0` against its only recorded input, `down0`: the skip is the model's input, not a series). Neither is
    a fault: a branch's scale is set against the stream it is added to, and a sum cannot exceed its terms."""
    keras.utils.set_random_seed(0)
    model = residual_blocks()
    model.compile("sgd", "mse")
    x = 5.0 * np.random.default_rng(0).normal(size=(64, 16)).astype("float32")  # not unit scale
    outputs = keras.Model(model.input, [model.get_layer(n).output for n in ("up0", "down0", "add0")])(x[:32])
    up, down, add = (float(np.std(o)) for o in outputs)
    assert up / down > 10 and add / np.sqrt(np.mean(np.square(outputs[1]))) > 10  # the precondition
    result = diagnose(fit(model, x, x, tmp_path, steps=6))
    assert not_info(result).empty, table(result)


def test_the_same_small_dense_outside_a_residual_branch_is_vanishing_depth(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,))
    h = L.Dense(16, activation="relu", name="up")(inp)
    h = L.Dense(16, name="down", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(h)
    model = keras.Model(inp, L.Dense(16, name="head")(h))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    result = not_info(diagnose(fit(model, x, x, tmp_path, steps=6)))
    assert result[["layer", "kind"]].values.tolist() == [["down", "vanishing_depth"]], table(result)


def test_one_value_per_example_is_judged_on_per_example_normalisations_only():
    """MobileNetV3Small's `Rescaling(1/127.5, offset=-1)` of inputs in [0, 1) outputs -1 +- 0.8% (the slow healthy
    zoo): one magnitude and one sign per example, as a LayerNormalization over an axis of size 1, but affine in
    its input: constant only where the input is. The same statistics at a LayerNormalization are constant_output."""
    stats = {
        "mean": -0.996,
        "std": 0.0023,
        "min": -1.0,
        "max": -0.992,
        "hoyer_sparsity": 1e-5,
        "zero_fraction": 0.0,
        "nan_count": 0.0,
        "inf_count": 0.0,
    }
    rows = [
        ("r", step, 0.0, layer, stat, v)
        for step in (1, 2, 3)
        for layer in ("scaled", "normed")
        for stat, v in stats.items()
    ]
    df = pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])
    layers = pd.DataFrame(
        {
            "run": "r",
            "layer": ["scaled", "normed"],
            "order": [0, 1],
            "inputs": [[], []],
            "class": ["Rescaling", "LayerNormalization"],
            "shape": [[None, 8, 8, 3]] * 2,
        }
    )
    found = not_info(tfprobe.diagnose(df, layers))
    assert found[["layer", "kind"]].values.tolist() == [["normed", "constant_output"]], table(found)


def test_the_logits_of_a_classifier_are_scaled_by_the_loss():
    """A model's output (and the logits before its softmax) grows as the classifier grows confident: not
    `exploding_depth`; the same growth inside the network is."""
    stats = {"feat": 0.02, "logits": 0.25, "probs": 0.2}
    rows = [("r", s, 0.0, layer, "std", v) for s in (1, 2) for layer, v in stats.items()]
    df = pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])
    bounded = [None, None, [0.0, 1.0]]
    layers = pd.DataFrame(
        {
            "run": "r",
            "layer": list(stats),
            "order": range(3),
            "bounds": bounded,
            "class": "Dense",
            "inputs": [[], ["feat"], ["logits"]],
            "shape": [[None, 6272], [None, 10], [None, 10]],
        }
    )
    assert tfprobe.diagnose(df, layers).empty  # logits before a softmax output
    assert tfprobe.diagnose(df[df["layer"] != "probs"], layers[layers["layer"] != "probs"]).empty  # logits as output
    inside = layers.assign(bounds=[None, None, None])  # `probs` is a Dense layer: `logits` is a hidden layer
    assert tfprobe.diagnose(df, inside)[["layer", "kind"]].values.tolist() == [["logits", "exploding_depth"]]
    huge = df.assign(value=df["value"] * 1e4)  # logits of std 2500: beyond what any loss asks (a softmax is saturated)
    assert tfprobe.diagnose(huge, layers)[["layer", "kind"]].values.tolist() == [["logits", "exploding_depth"]]


def test_squeeze_and_excite_pooling_is_judged_by_retention(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inp))
    x = L.Activation("swish", name="act")(x)
    se = L.Reshape((1, 1, 16))(L.GlobalAveragePooling2D(name="squeeze")(x))
    se = L.Conv2D(16, 1, activation="sigmoid", name="expand")(L.Conv2D(4, 1, activation="swish", name="reduce")(se))
    x = L.GlobalAveragePooling2D(name="pool")(L.Multiply(name="excite")([x, se]))
    model = keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    # inputs with little spatial structure: the average over 256 positions keeps little of the variation
    fit(model, rng.random((32, 16, 16, 3)).astype("float32"), rng.integers(0, 10, 32), tmp_path, gradients=True)
    assert last(tmp_path, "act", "std") / last(tmp_path, "squeeze", "std") > 10  # the precondition
    result = diagnose(tmp_path)
    assert not_info(result).empty, table(result)


def test_six_linear_layers_growing_12x_each_are_found_with_every_call_form(tmp_path):
    """Issue 23: `diagnose(read_logdir(d))` gave no finding at all on this stack; every form must agree."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    x = inp
    init = keras.initializers.RandomNormal(stddev=1.5, seed=1)  # 1.5 * sqrt(64) = 12x per layer
    x = L.Dense(64, name="lin0")(x)
    for i in range(1, 6):
        x = L.Dense(64, kernel_initializer=init, name=f"lin{i}")(x)
    probs = L.Dense(10, activation="softmax", name="probs")(x)  # confident: one-hot, not saturated
    side = L.LayerNormalization(gamma_initializer=keras.initializers.Constant(1e-4), name="norm")(
        inp
    )  # near zero by design
    model = keras.Model(inp, {"probs": probs, "norm": side})
    model.compile(keras.optimizers.SGD(0.0), {"probs": "sparse_categorical_crossentropy"})
    rng = np.random.default_rng(0)
    fit(model, rng.normal(size=(32, 64)).astype("float32"), {"probs": rng.integers(0, 10, 32)}, tmp_path)
    assert last(tmp_path, "probs", "saturation_fraction") > 0.5 and last(tmp_path, "norm", "near_zero_fraction") > 0.99

    df, layers = tfprobe.read_logdir(tmp_path), tfprobe.read_layers(tmp_path)
    forms = {"logdir": diagnose(tmp_path), "frame": tfprobe.diagnose(df), "frame+layers": tfprobe.diagnose(df, layers)}
    expected = {(f"lin{i}", "exploding_depth") for i in range(1, 6)}
    for name, result in forms.items():
        got = {
            (l, k)
            for l, k in zip(result["layer"], result["kind"])
            if k.endswith("_depth") or k in ("saturation", "dead_layer")
        }
        assert got == expected, (name, table(result))
        pd.testing.assert_frame_equal(result, forms["logdir"])

    # a frame that lost its layers (rebuilt from its columns): one warning naming the checks and what to pass
    bare = pd.DataFrame({c: df[c].to_numpy() for c in df.columns})
    with pytest.warns(RuntimeWarning) as caught:
        result = tfprobe.diagnose(bare)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "'depth'" in text and "'saturation'" in text and "read_layers" in text and "diagnose(logdir)" in text
    got = {(l, k) for l, k in zip(result["layer"], result["kind"])}
    assert ("probs", "saturation") in got and ("norm", "dead_layer") in got  # what the warning is about
    assert not any(k.endswith("_depth") for k in result["kind"])


def test_read_logdir_frames_carry_the_layers_through_pandas(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(4, name="a"), L.Dense(2, name="b")])
    model.compile("sgd", "mse")
    fit(model, np.ones((16, 4), "float32"), np.zeros((16, 2), "float32"), tmp_path / "r1", steps=2)
    fit(model, np.ones((16, 4), "float32"), np.zeros((16, 2), "float32"), tmp_path / "r2", steps=2)
    df = tfprobe.read_logdir(tmp_path)
    from tfprobe.logs.reader import layers_of

    pd.testing.assert_frame_equal(layers_of(df), tfprobe.read_layers(tmp_path))
    assert layers_of(df.query("run == 'r1'")) is not None  # pandas keeps attrs through its operations
    both = pd.concat([df, tfprobe.read_logdir(tmp_path / "r1")])  # different attrs: pandas drops them, no error
    assert isinstance(both, pd.DataFrame)


# ------------------------------------------------------------------ weights no optimizer updates


class Distiller(keras.Model):
    """The example's distiller: the teacher is trainable, but only the student's weights are given to the
    optimizer."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher, self.student = teacher, student

    def train_step(self, data):
        x, y = data
        teacher_predictions = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_predictions = self.student(x, training=True)
            loss = keras.losses.kl_divergence(
                tf.nn.softmax(teacher_predictions / 3), tf.nn.softmax(student_predictions / 3)
            )
            loss += keras.losses.sparse_categorical_crossentropy(y, student_predictions, from_logits=True)
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return {"loss": tf.reduce_mean(loss)}

    def call(self, x):
        return self.student(x)


def test_a_teacher_no_optimizer_updates_is_never_stalled(tmp_path):
    keras.utils.set_random_seed(0)

    def net(name, width):
        return keras.Sequential(
            [
                keras.Input((12,)),
                L.Dense(width, activation="relu", name=f"{name}_hidden"),
                L.Dense(4, name=f"{name}_logits"),
            ],
            name=name,
        )

    distiller = Distiller(net("student", 8), net("teacher", 32))
    distiller.compile(keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    fit(distiller, rng.normal(size=(32, 12)).astype("float32"), rng.integers(0, 4, 32), tmp_path, gradients=True)
    w = wide(tmp_path)
    teacher = w[w["layer"].str.startswith("teacher")]
    # the teacher's update figures say no optimizer touched it: 0 (or, in other recorders, missing or NaN)
    assert not (teacher.get("update_ratio", pd.Series(dtype=float)).fillna(0.0) > 0).any()
    result = diagnose(tmp_path)
    assert not (result["kind"] == "stalled_layer").any(), table(result)


@pytest.mark.parametrize(
    "figures",
    [
        {"update_ratio": 0.0, "weight_grad_norm": 0.0},  # no gradient given to the optimizer
        {"update_ratio": np.nan, "weight_grad_norm": np.nan},  # no update figures, written as NaN
        {},  # no update figures at all
    ],
)
def test_weights_without_an_applied_gradient_get_no_verdict(figures):
    rows = [("r", s, 0.0, "teacher", stat, v) for s in (1, 2, 3) for stat, v in {"weight_norm": 3.0, **figures}.items()]
    result = tfprobe.diagnose(pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"]))
    assert result.empty, table(result)


# ------------------------------------------------------------------ gradients: sizes, calls, windows


def test_gradients_are_compared_as_norms_per_example():
    """A 4096-value feature map feeding a 1-unit output: the same norm per example is 64x smaller in rms."""
    layers = pd.DataFrame(
        {
            "run": "r",
            "layer": ["maps", "flat", "logit"],
            "order": range(3),
            "inputs": [[], ["maps"], ["flat"]],
            "shape": [[None, 64, 64, 1], [None, 4096], [None, 1]],
        }
    )
    rows = [
        ("r", s, 0.0, layer, "grad_rms", v)
        for s in (1, 2)
        for layer, v in (("maps", 1e-5), ("flat", 1e-5), ("logit", 0.05))
    ]
    df = pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])
    assert tfprobe.diagnose(df, layers).empty  # norms: 5e-2 against 6.4e-4, 78x
    found = tfprobe.diagnose(df, layers.drop(columns="shape"))  # without shapes: rms, 5000x
    assert set(found["kind"]) == {"vanishing_gradient"} and "gradient rms falls" in found["message"].iloc[0]
    assert tfprobe.diagnose(df.assign(value=df["value"].where(df["layer"] != "maps", 1e-8)), layers)[
        ["layer", "kind"]
    ].values.tolist() == [["maps", "vanishing_gradient"]]


def test_a_gan_generator_judged_through_the_discriminators_second_call(tmp_path):
    keras.utils.set_random_seed(0)
    latent = 16
    discriminator = keras.Sequential(
        [
            keras.Input((64, 64, 8)),
            L.Conv2D(8, 3, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.GlobalAveragePooling2D(),
            L.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )
    generator = keras.Sequential(
        [
            keras.Input((latent,)),
            L.Dense(4 * 4 * 16),
            L.Reshape((4, 4, 16)),
            L.Conv2DTranspose(32, 4, strides=4, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Conv2DTranspose(64, 4, strides=4, padding="same"),
            L.LeakyReLU(negative_slope=0.2),
            L.Conv2D(8, 3, padding="same", activation="sigmoid"),
        ],
        name="generator",
    )
    gan = GAN(discriminator, generator, latent)
    gan.compile(keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4), keras.losses.BinaryCrossentropy())
    fit(gan, np.random.default_rng(0).random((32, 64, 64, 8)).astype("float32"), None, tmp_path, gradients=True)
    layers = tfprobe.read_layers(tmp_path).set_index("layer")
    # each call is its own series, fed along the edges of its own call
    second = [name for name in layers.index if name.endswith("#1")]
    assert second and all(all(i.endswith("#1") for i in layers.at[name, "inputs"]) for name in second)
    w = wide(tmp_path)
    g = w.dropna(subset=["grad_rms"]).groupby("layer")["grad_rms"].last()
    # the precondition: in rms, the generator's 64x64 maps get 1000x less than the discriminator's output side
    # (its average over 4096 positions hands each value 1/4096 of the gradient: 1/64 of the norm)
    assert g.max() / g[[n for n in g.index if n.startswith("generator/")]].min() > 1000
    result = diagnose(tmp_path)
    assert not (result["kind"].isin(["vanishing_gradient", "exploding_gradient"])).any(), table(result)


def test_a_single_first_window_is_info_for_gradient_findings_as_for_activations():
    layers = pd.DataFrame({"run": "r", "layer": ["a", "b"], "order": [0, 1], "inputs": [[], ["a"]]})

    def run(first_a):
        rows = [("r", s, 0.0, "a", "grad_rms", first_a if s == 10 else 1e-3) for s in (10, 20, 30, 40)]
        rows += [("r", s, 0.0, "b", "grad_rms", 1.0) for s in (10, 20, 30, 40)]
        rows += [("r", s, 0.0, "a", "update_ratio", 0.5 if s == 10 else 1e-3) for s in (10, 20, 30, 40)]
        return tfprobe.diagnose(
            pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"]), layers
        )

    early = run(1e-7)
    assert sorted(early["kind"]) == ["unstable_updates", "vanishing_gradient"]
    assert (early["severity"] == "info").all() and early["message"].str.contains("transient").all(), table(early)


# ------------------------------------------------------------------ zero gradients the graph explains


def test_an_output_without_a_loss_has_a_zero_gradient_that_is_explained(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = L.Dense(16, activation="relu", name="hidden")(inp)
    aux = L.Dense(4, name="aux_head")(L.Dense(8, activation="tanh", name="aux_hidden")(h))
    model = keras.Model(inp, {"main": L.Dense(2, name="main")(h), "aux": aux})
    model.compile("adam", {"main": "mse", "aux": "mse"}, loss_weights={"main": 1.0, "aux": 0.0})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    fit(model, x, {"main": np.zeros((32, 2), "float32"), "aux": np.zeros((32, 4), "float32")}, tmp_path, gradients=True)
    w = wide(tmp_path)
    zero = w.groupby("layer")["grad_zero_fraction"].min()
    assert zero["aux_head"] == 1.0 and zero["aux_hidden"] == 1.0 and zero["hidden"] < 0.5  # the precondition
    result = diagnose(tmp_path)
    assert not_info(result).empty, table(result)
    explained = result[result["kind"] == "dead_gradient"]
    assert set(explained["layer"]) == {"aux_head", "aux_hidden"}, table(result)
    assert explained["message"].str.contains("does not reach the loss").all()


def test_a_zero_gradient_with_a_live_consumer_is_still_dead():
    layers = pd.DataFrame(
        {"run": "r", "layer": ["att", "norm", "out"], "order": range(3), "inputs": [[], ["att"], ["norm"]]}
    )
    rows = [
        ("r", s, 0.0, layer, stat, v)
        for s in (1, 2, 3)
        for layer, stats in {
            "att": {"grad_zero_fraction": 1.0, "zero_fraction": 0.0},
            "norm": {"grad_zero_fraction": 0.0},
            "out": {"grad_zero_fraction": 0.0},
        }.items()
        for stat, v in stats.items()
    ]
    result = tfprobe.diagnose(
        pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"]), layers
    )
    assert result[["layer", "kind", "severity"]].values.tolist() == [["att", "dead_gradient", "warning"]]


def test_the_registry_keeps_its_structure():
    assert callable(findings.register) and all(callable(c) for c in findings.CHECKS.values())
    assert {"depth", "gradient_depth", "dead_gradient", "updates"} <= set(findings.CHECKS)


def test_a_max_pooling_keeps_the_gradient_norm_an_average_pooling_divides_it():
    """Through a global pooling over 64x64 positions, an average hands each position 1/4096 of the gradient
    (its norm falls 64x, by design), a max hands each channel's gradient whole to one position (the norm is
    kept). A 20x growth of the norm per example from the pooling back to the feature maps is thus within
    bounds behind a max pooling, and 1280x more than the design behind an average pooling. (Four
    MaxPooling3D of keras-io's 3D CT-scan classifier were discounted as averages: 5.75e3x, a false
    `exploding_gradient` on its first Conv3D, where the norm grows 70x without the probe.)"""

    def diagnose(pool_class):
        layers = pd.DataFrame(
            {
                "run": "r",
                "layer": ["maps", "pool"],
                "order": range(2),
                "inputs": [[], ["maps"]],
                "class": ["Conv2D", pool_class],
                "shape": [[None, 64, 64, 4], [None, 4]],
            }
        )
        values = {"maps": 20.0 / 128, "pool": 0.5}  # norms per example: 20 and 1
        rows = [("r", s, 0.0, layer, "grad_rms", v) for s in (1, 2) for layer, v in values.items()]
        df = pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])
        return tfprobe.diagnose(df, layers)

    assert diagnose("GlobalMaxPooling2D").empty
    found = diagnose("GlobalAveragePooling2D")
    assert found[["layer", "kind"]].values.tolist() == [["maps", "exploding_gradient"]], found.to_string()
