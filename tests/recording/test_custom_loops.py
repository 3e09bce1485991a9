"""Custom training loops: a `train_step` with optimizers of its own (a GAN), a teacher no optimizer trains.

The step counter must not depend on `model.optimizer` (unused here), update figures must come from whichever
optimizers apply gradients to the model's weights, and weights no optimizer touched have none (never "stalled").
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.custom_loops import gan, images
from keras import layers, ops

import tfprobe


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["graph", "xla"])
def test_a_gan_writes_every_window_at_its_own_step_with_both_optimizers_figures(tmp_path, jit_compile):
    model = gan()
    model.jit_compile = jit_compile
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about, in `fit` or when reading
        model.fit(images(), batch_size=16, epochs=2, verbose=0, callbacks=[probe])
        wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert int(model.optimizer.iterations.numpy()) == 0  # `model.optimizer` unused
    # this probe's optimizer watch is removed (a probe of an earlier test whose `fit` raised may still hold one:
    # Keras calls no callback when `fit` raises; the wrapper is inert outside a watched step)
    from tfprobe.recording.backward import OptimizerWatch

    assert OptimizerWatch._users > 0 or not hasattr(keras.optimizers.Optimizer.apply, "_tfprobe_original")
    assert sorted(set(wide["step"])) == list(range(1, 9))  # 2 epochs of 4 batches, a window each
    assert probe.windows_written == 8
    # One window per step: the update of SGD(lr) is lr * g, so ||dw|| / ||w|| = lr * ||g|| / ||w||, with the
    # discriminator's gradients from its optimizer (lr 0.01) and the generator's from its own (lr 0.03).
    lrs = {"discriminator": 0.01, "generator": 0.03}
    checked = set()
    for row in wide[wide["weight_norm"].notna()].itertuples():
        lr = lrs[row.layer.split("/")[0]]
        assert row.weight_grad_norm > 0, row.layer
        np.testing.assert_allclose(
            row.update_ratio,
            lr * row.weight_grad_norm / row.weight_norm,
            rtol=2e-3,
            err_msg=f"{row.layer} at step {row.step}",
        )
        checked.add(row.layer.split("#")[0])
    assert checked == {"discriminator/conv", "discriminator/dense", "generator/dense", "generator/up", "generator/conv"}

    # A second `fit` goes on from the step the first ended at.
    model.fit(
        images(),
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=2, gradients=True)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps = sorted(set(tfprobe.read_logdir(tmp_path)["step"]))
    assert steps == list(range(1, 9)) + [10, 12]


def test_a_model_without_an_optimizer_step_counts_its_batches(tmp_path):
    """A train step that applies no optimizer at all (updates by hand) still advances the step each batch."""

    class Manual(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = ops.mean(ops.square(self(x, training=True) - y))
            for v, g in zip(self.trainable_variables, tape.gradient(loss, self.trainable_variables)):
                v.assign_sub(0.01 * g)
            return {"loss": loss}

    inp = keras.Input((4,))
    model = Manual(inp, layers.Dense(1, name="out")(layers.Dense(3, activation="relu", name="h")(inp)))
    model.compile("sgd")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model.fit(
        x,
        x[:, :1],
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=2, gradients=True)],
    )
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index(["step", "layer"])
    assert sorted(set(wide.index.get_level_values("step"))) == [2, 4]
    # No optimizer applied anything: weight norms, but no update figures.
    assert (wide["weight_norm"].dropna() > 0).all()
    assert wide.get("update_ratio", wide["weight_norm"] * np.nan).isna().all()


class Distiller(keras.Model):
    """The distiller of keras-io's "Knowledge Distillation" (examples/vision/knowledge_distillation.py), with its
    train step written out so that only the student is given to the optimizer: the teacher stays trainable."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher = teacher
        self.student = student

    def compile(self, optimizer, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3):
        super().compile(optimizer=optimizer)
        self.student_loss_fn = student_loss_fn
        self.distillation_loss_fn = distillation_loss_fn
        self.alpha = alpha
        self.temperature = temperature

    def train_step(self, data):
        x, y = data
        teacher_pred = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_pred = self.student(x, training=True)
            student_loss = self.student_loss_fn(y, student_pred)
            distillation_loss = self.distillation_loss_fn(
                ops.softmax(teacher_pred / self.temperature, axis=1),
                ops.softmax(student_pred / self.temperature, axis=1),
            ) * (self.temperature**2)
            loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}

    def call(self, x):
        return self.student(x)


def test_a_teacher_no_optimizer_trains_has_no_update_figures_and_is_not_stalled(tmp_path):
    keras.utils.set_random_seed(0)

    def net(name, width):
        return keras.Sequential(
            [
                keras.Input((6, 6, 1)),
                layers.Conv2D(width, 3, activation="relu", name="conv"),
                layers.GlobalAveragePooling2D(name="gap"),
                layers.Dense(3, name="logits"),
            ],
            name=name,
        )

    teacher, student = net("teacher", 8), net("student", 4)
    distiller = Distiller(student, teacher)
    distiller.compile(
        keras.optimizers.SGD(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        keras.losses.KLDivergence(),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 6, 1)).astype("float32")
    y = (x[:, 2:4, 2:4, 0].mean(axis=(1, 2)) > 0).astype("int64") + (x[:, 0, 0, 0] > 1)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    distiller.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=3, gradients=True)],
    )
    assert all(np.array_equal(a, b) for a, b in zip(teacher_weights, teacher.get_weights()))
    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert sorted(set(wide["step"])) == [3, 6, 9, 12]
    for name in ("teacher/conv", "teacher/logits"):
        rows = wide[wide.layer == name]
        assert (rows["weight_norm"] > 0).all(), name
        assert rows["update_ratio"].isna().all() and rows["weight_grad_norm"].isna().all(), name
    for name in ("student/conv", "student/logits"):
        rows = wide[wide.layer == name]
        assert (rows["update_ratio"] > 0).all() and (rows["weight_grad_norm"] > 0).all(), name
    findings = tfprobe.diagnose(tfprobe.read_logdir(tmp_path), layers=tfprobe.read_layers(tmp_path))
    about_teacher = findings[findings["layer"].str.startswith("teacher")]
    assert not about_teacher["kind"].isin(["stalled_layer", "nan_weights"]).any(), about_teacher.to_string()


def test_every_gradient_a_layer_receives_in_a_step_is_folded(tmp_path):
    """A step that backpropagates twice through a layer (a persistent tape differentiated for two losses; the
    critic call of a WGAN-GP, reached by the penalty's inner tape and, as exact zeros, by the outer one) folds
    both gradients, not the last one built: here the training loss's (no zero) and an all-zero one."""

    class TwoPasses(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape(persistent=True) as tape:
                pred = self(x, training=True)
                loss = ops.mean(ops.square(pred - y))
                nothing = ops.sum(pred) * 0.0
            variables = self.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            tape.gradient(nothing, variables)  # a second pass: dL/d out is exactly zero
            return {"loss": loss}

    inp = keras.Input((4,))
    model = TwoPasses(inp, layers.Dense(1, name="out")(inp))
    model.compile("sgd")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model.fit(
        x,
        x[:, :1] + 5.0,  # the training gradient 2 (pred - y) / n is never exactly zero
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=4, gradients=True)],
    )
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    assert wide.loc["out", "grad_zero_fraction"] == 0.5
    assert wide.loc["out", "grad_rms"] > 0


class GradientPenalty(keras.Model):
    """A WGAN-GP critic step: the critic's output on real data, and a gradient penalty on its gradient with
    respect to its input, taken by a `GradientTape` inside the loss's tape (the critic's second call)."""

    def __init__(self, critic):
        super().__init__()
        self.critic = critic

    def train_step(self, x):
        with tf.GradientTape() as tape:
            real = self.critic(x, training=True)
            interpolated = x * 0.5
            with tf.GradientTape() as gp_tape:
                gp_tape.watch(interpolated)
                pred = self.critic(interpolated, training=True)
            grads = gp_tape.gradient(pred, [interpolated])[0]
            gp = tf.reduce_mean((tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1)) - 1.0) ** 2)
            loss = -tf.reduce_mean(real) + 10.0 * gp
        weights = self.critic.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {"loss": loss}


def test_a_gradient_penalty_call_gets_no_gradient_figures_and_no_dead_gradient(tmp_path):
    """The penalty's call of the critic is differentiated twice: by the inner tape (its gradient is part of the
    loss) and, through that gradient, by the loss's tape: a second-order term, exactly zero through LeakyReLU
    and Dense (the weights still learn from the penalty). Neither is `dL/da`: that call gets no gradient
    figures, the first call gets its own, and nothing is called a dead gradient."""
    critic = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(8, name="dense"),
            layers.LeakyReLU(0.2, name="act"),
            layers.Dense(1, name="out"),
        ],
        name="critic",
    )
    model = GradientPenalty(critic)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=2, gradients=True)
    model.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=[probe])
    df = tfprobe.read_logdir(tmp_path)
    # without the probe: the loss's gradient at the penalty call's first Dense output is exactly zero, while
    # the critic's first kernel gets a gradient from the penalty
    interpolated = tf.constant(x[:16]) * 0.5
    with tf.GradientTape(persistent=True) as tape:
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            hidden = critic.get_layer("dense")(interpolated)
            tape.watch(hidden)
            pred = critic.get_layer("out")(critic.get_layer("act")(hidden))
        g = gp_tape.gradient(pred, interpolated)
        gp = tf.reduce_mean((tf.sqrt(tf.reduce_sum(tf.square(g), axis=1)) - 1.0) ** 2)
    dhidden = tape.gradient(gp, hidden)
    assert dhidden is not None and not np.any(np.asarray(dhidden))
    assert np.any(np.asarray(tape.gradient(gp, critic.get_layer("dense").kernel)))
    gradients = df[df.stat == "grad_rms"]
    assert set(gradients.layer) == {"critic/dense", "critic/act", "critic/out"}, sorted(set(gradients.layer))
    assert (gradients.value > 0).all()
    assert {"critic/dense#1", "critic/act#1", "critic/out#1"} <= set(df.layer)  # its activations are recorded
    findings = tfprobe.diagnose(tmp_path)
    assert not (findings.kind == "dead_gradient").any(), findings[["layer", "kind", "message"]].to_string()


class NoisyInputs(keras.Model):
    """A `train_step` that draws noise with TensorFlow's stateful `tf.random.normal` (as the WGAN-GP example
    draws its latent vectors): the op's random state lives in the kernel of the traced function."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def train_step(self, data):
        x, y = data
        noisy = x + tf.random.normal(tf.shape(x))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.net(noisy, training=True) - y))
        weights = self.net.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {"loss": loss}


def test_a_step_with_stateful_random_ops_trains_as_without_the_probe(tmp_path):
    """Steps that record nothing run in Keras' own train function, the others in the probed one: with
    `tf.random.normal` in the step, that would restart its random stream at each switch, and the probe would
    change the noise training sees. Such a step runs every call in the probed function: History and weights
    equal the run without the probe."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")

    def train(callbacks):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(1)], name="net")
        model = NoisyInputs(net)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        return history.history["loss"], net.get_weights()

    plain_loss, plain_weights = train([])
    probe = tfprobe.LayerProbe(tmp_path, record_freq=4, log_freq=4)
    loss, weights = train([probe])
    assert loss == plain_loss
    for a, b in zip(weights, plain_weights):
        np.testing.assert_array_equal(a, b)
    assert sorted(set(tfprobe.read_logdir(tmp_path).step)) == [4, 8]
