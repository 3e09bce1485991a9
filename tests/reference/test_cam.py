"""Where the model looks, with known answers: the pointing game, the CAM identity, feature maps, bad input."""

import keras
import numpy as np
import pytest

from tfprobe import cam as looks

SIZE, PATCH = 16, 4
LENGTH, BURST = 128, 16


def patch_task(n, seed):
    """16x16 noise with three +-0.45 distractor squares; the class is the sign of one +-1 square (its box returned)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, SIZE, SIZE, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    boxes = np.zeros((n, 2), int)
    for i in range(n):
        for _ in range(3):
            r, c = rng.integers(0, SIZE - PATCH + 1, 2)
            x[i, r : r + PATCH, c : c + PATCH, 0] += rng.choice([-0.45, 0.45])
        r, c = rng.integers(0, SIZE - PATCH + 1, 2)
        x[i, r : r + PATCH, c : c + PATCH, 0] = 1.0 if y[i] == 0 else -1.0
        boxes[i] = r, c
    return x, y, boxes


def burst_task(n, seed):
    """Noisy waveforms with one 16-sample tone burst at a random time; the class is its frequency."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.2, (n, LENGTH, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    starts = rng.integers(0, LENGTH - BURST + 1, n)
    t = np.arange(BURST)
    for i in range(n):
        x[i, starts[i] : starts[i] + BURST, 0] += 1.5 * np.hanning(BURST) * np.sin(2 * np.pi * (0.08, 0.3)[y[i]] * t)
    return x, y, starts


def conv_layers():
    return [
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv"),
    ]


class SubclassedCNN(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.body = conv_layers()
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(2, activation="softmax", name="head")

    def call(self, x, training=False):
        for layer in self.body:
            x = layer(x)
        return self.head(self.gap(x))


def build(kind):
    """The same CNN (conv, pool, conv, global average pooling, softmax dense) as a model of `kind`."""
    if kind == "sequential":
        return keras.Sequential(
            [
                keras.Input((SIZE, SIZE, 1)),
                *conv_layers(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, activation="softmax", name="head"),
            ]
        )
    if kind == "nested":
        backbone = keras.Sequential([keras.Input((SIZE, SIZE, 1)), *conv_layers()], name="backbone")
        inputs = keras.Input((SIZE, SIZE, 1))
        pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(pooled))
    model = SubclassedCNN()
    model(np.zeros((1, SIZE, SIZE, 1), "float32"))
    return model


def trained(model, x, y, epochs=6):
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def patch_data():
    return patch_task(800, seed=0), patch_task(200, seed=1)


@pytest.fixture(scope="module")
def sequential(patch_data):
    keras.utils.set_random_seed(0)
    (x, y, _), _ = patch_data
    return trained(build("sequential"), x, y)


def pointing(maps, boxes):
    """The fraction of 2D maps whose peak lies inside the example's patch."""
    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    return np.mean(np.all((peaks >= boxes) & (peaks < boxes + PATCH), axis=1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, layer_path", [("sequential", "last_conv"), ("nested", "backbone/last_conv"), ("subclassed", "last_conv")]
)
def test_pointing_game_on_every_model_kind(kind, layer_path, patch_data, sequential):
    (x, y, _), (xt, yt, boxes) = patch_data
    if kind == "sequential":
        model = sequential
    else:
        keras.utils.set_random_seed(0)
        model = trained(build(kind), x, y)
    assert np.mean(np.asarray(model(xt)).argmax(1) == yt) >= 0.9
    assert looks.default_layer(model, xt) == layer_path
    maps = looks.grad_cam(model, xt)
    assert maps.shape == (len(xt), SIZE, SIZE) and maps.dtype == np.float32 and (maps >= 0).all()
    assert pointing(maps, boxes) >= 0.9
    assert pointing(looks.grad_cam_plus_plus(model, xt), boxes) >= 0.9
    np.testing.assert_array_equal(looks.grad_cam(model, xt, layer=layer_path), maps)


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_grad_cam_at_the_pooled_layer_is_cam_up_to_a_positive_factor(kind, patch_data, sequential):
    _, (xt, yt, _) = patch_data
    keras.utils.set_random_seed(1)
    model = sequential if kind == "sequential" else build(kind)  # the identity holds for any weights
    for class_index in (None, 1, yt[:32]):
        gradient_maps = looks.grad_cam(model, xt[:32], class_index=class_index)
        class_maps = looks.cam(model, xt[:32], class_index=class_index)
        for g, c in zip(gradient_maps, class_maps):
            if c.max() > 0:
                assert np.corrcoef(g.ravel(), c.ravel())[0, 1] >= 0.999
        ratio = gradient_maps.sum() / class_maps.sum()  # 1 / (8 x 8 positions averaged by the pooling)
        assert ratio == pytest.approx(1 / 64, rel=1e-3)


def test_the_class_score_is_the_logit_and_the_softmax_is_restored(patch_data, sequential):
    _, (xt, _, _) = patch_data
    linear = keras.models.clone_model(sequential)
    linear.set_weights(sequential.get_weights())
    linear.get_layer("head").activation = keras.activations.linear
    np.testing.assert_allclose(
        looks.grad_cam(sequential, xt[:8], class_index=0),
        looks.grad_cam(linear, xt[:8], class_index=0),
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(np.asarray(sequential(xt[:8])).sum(axis=1), 1.0, rtol=1e-5)
    one, other = looks.grad_cam(sequential, xt[:8], class_index=0), looks.grad_cam(sequential, xt[:8], class_index=1)
    assert not np.allclose(one, other)
    mixed = looks.grad_cam(sequential, xt[:8], class_index=[0, 1] * 4)
    np.testing.assert_array_equal(mixed[::2], one[::2])
    np.testing.assert_array_equal(mixed[1::2], other[1::2])


@pytest.mark.slow
def test_the_heat_strip_of_a_1d_model_peaks_inside_the_tone_burst():
    keras.utils.set_random_seed(0)
    x, y, _ = burst_task(800, seed=0)
    xt, yt, starts = burst_task(200, seed=1)
    relu = {"padding": "same", "activation": "relu"}
    model = keras.Sequential(
        [
            keras.Input((LENGTH, 1)),
            keras.layers.Conv1D(8, 7, **relu),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(16, 5, **relu),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(16, 3, name="last", **relu),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    assert np.mean(np.asarray(model(xt)).argmax(1) == yt) >= 0.9
    strips = looks.grad_cam(model, xt)
    assert strips.shape == (len(xt), LENGTH) and (strips >= 0).all()
    peaks = strips.argmax(axis=1)
    assert np.mean((peaks >= starts) & (peaks < starts + BURST)) >= 0.9
    assert np.corrcoef(strips.ravel(), looks.cam(model, xt).ravel())[0, 1] >= 0.999


def test_feature_map_grid_is_the_layer_output_computed_directly(patch_data, sequential):
    _, (xt, _, _) = patch_data
    x = xt[:5]
    direct = x
    for layer in sequential.layers[:3]:  # conv1, pool, last_conv
        direct = np.asarray(layer(direct))
    k = 6
    result = looks.feature_maps(sequential, x, "last_conv", channels=k)
    assert result.layer == "last_conv" and result.maps.shape == (5, k, 8, 8) and result.grid.shape == (5, 17, 26)
    for i in range(len(x)):
        activity = np.abs(direct[i]).mean(axis=(0, 1))
        np.testing.assert_array_equal(result.channels[i], np.argsort(-activity, kind="stable")[:k])
        assert activity[result.channels[i][0]] == activity.max()
        for j, channel in enumerate(result.channels[i]):
            plane = direct[i, :, :, channel]
            expected = (plane - plane.min()) / (plane.max() - plane.min()) if plane.max() > plane.min() else 0 * plane
            r, c = divmod(j, 3)  # ceil(sqrt(6)) = 3 maps a row (2 rows), 1 pixel apart
            np.testing.assert_allclose(result.grid[i, r * 9 : r * 9 + 8, c * 9 : c * 9 + 8], expected, atol=1e-5)
    assert looks.feature_maps(sequential, x).layer == "last_conv"


def test_running_the_maps_during_fit_leaves_the_weights_unchanged(patch_data):
    (x, y, _), (xt, _, _) = patch_data

    class Looker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            looks.grad_cam(self.model, xt[:8])
            looks.grad_cam_plus_plus(self.model, xt[:8], class_index=1)
            looks.cam(self.model, xt[:8])
            looks.feature_maps(self.model, xt[:8], "conv1")

    weights = []
    for callbacks in ([], [Looker()]):
        keras.utils.set_random_seed(3)
        model = build("sequential")
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(x[:128], y[:128], epochs=2, batch_size=32, verbose=0, callbacks=callbacks)
        weights.append(model.get_weights())
    for before, after in zip(*weights):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: looks.grad_cam(m, x, layer="head"), r"`layer` must be a layer with a 1D or 2D spatial.*head"),
        (lambda m, x: looks.grad_cam(m, x, layer="nope"), r"`layer` is not a layer.*layer='nope'.*Available"),
        (lambda m, x: looks.grad_cam(m, x, layer=3), r"`layer` must be a layer name"),
        (lambda m, x: looks.grad_cam(m, x[:, :8]), r"`x` must be examples of shape \(16, 16, 1\).*\(4, 8, 16, 1\)"),
        (lambda m, x: looks.grad_cam(m, x[0]), r"`x` must be examples of shape"),
        (lambda m, x: looks.grad_cam(m, x[:0]), r"`x` must be a non-empty batch"),
        (lambda m, x: looks.grad_cam(m, x, class_index=2), r"`class_index` must be.*class_index=2"),
        (lambda m, x: looks.grad_cam(m, x, class_index=[0, 1]), r"`class_index` must be.*one such int per example"),
        (lambda m, x: looks.feature_maps(m, x, "conv1", channels=0), r"`channels` must be a positive integer"),
        (lambda m, x: looks.feature_maps(m, x, "head"), r"`layer` must be a layer with a 1D or 2D spatial output"),
    ],
)
def test_bad_arguments_are_named(call, message):
    keras.utils.set_random_seed(0)
    model = build("sequential")
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, np.zeros((4, SIZE, SIZE, 1), "float32"))


def test_models_that_do_not_output_class_scores_or_lack_a_cam_head_are_named():
    x = np.zeros((2, SIZE, SIZE, 1), "float32")
    segmenter = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    with pytest.raises(ValueError, match=r"`model` must output class scores of shape \(batch, classes\)"):
        looks.grad_cam(segmenter, x, layer="conv")
    flat_head = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    with pytest.raises(ValueError, match=r"`model` must end in global average pooling followed by a dense.*flatten"):
        looks.cam(flat_head, x)
    assert looks.grad_cam(flat_head, x).shape == (2, SIZE, SIZE)
    vector = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"`layer` cannot be chosen automatically: no layer .* spatial output"):
        looks.grad_cam(vector, np.zeros((2, 5), "float32"))


class Distiller(keras.Model):
    """A distiller as keras-io's "Knowledge Distillation" writes it: no `call`, only a `train_step` (not needed
    here) that calls the two classifiers it holds."""

    def __init__(self, student, teacher, name="distiller"):
        super().__init__(name=name)
        self.teacher = teacher
        self.student = student


def test_a_model_without_call_is_refused_naming_the_models_it_holds():
    x = np.zeros((2, SIZE, SIZE, 1), "float32")
    teacher, student = (
        keras.Sequential(
            [
                keras.Input((SIZE, SIZE, 1)),
                keras.layers.Conv2D(2, 3, name="conv"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ],
            name=name,
        )
        for name in ("teacher", "student")
    )
    distiller = Distiller(student, teacher)
    message = (
        r"`model` must be a model that can be called on `x`: model 'distiller' \(Distiller\) has no `call` "
        r"method .* pass one of the models it holds that can be called: model.teacher \('teacher', "
        r"Sequential\), model.student \('student', Sequential\)"
    )
    for explain in (looks.grad_cam, looks.grad_cam_plus_plus, looks.cam, looks.feature_maps):
        with pytest.raises(ValueError, match=message):
            explain(distiller, x)
    assert looks.grad_cam(distiller.student, x).shape == (2, SIZE, SIZE)  # what the message says to pass works
    with pytest.raises(
        ValueError,
        match=r"model 'empty' \(Distiller\) has no `call` method .* pass a model that "
        r"can be called on `x`",
    ):
        looks.grad_cam(Distiller(None, None, name="empty"), x)


class HeadFirst(keras.Model):
    """A subclassed model whose last tracked layer is a hidden sigmoid conv: it must not be bypassed."""

    def __init__(self):
        super().__init__(name="head_first")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(2, name="head")
        self.conv = keras.layers.Conv2D(3, 3, activation="sigmoid", name="conv")

    def call(self, x, training=False):
        return self.head(self.gap(self.conv(x)))


def test_only_the_layer_that_makes_the_output_loses_its_softmax():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = HeadFirst()
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    model(x)
    with tf.GradientTape() as tape:
        a = model.conv(x)
        tape.watch(a)
        score = tf.reduce_sum(model.head(model.gap(a))[:, 1])
    weights = tf.reduce_mean(tape.gradient(score, a), axis=(1, 2), keepdims=True)
    expected = tf.image.resize(tf.nn.relu(tf.reduce_sum(weights * a, axis=-1))[..., None], (8, 8))[..., 0]
    assert looks.default_layer(model, x) == "conv"
    np.testing.assert_allclose(looks.grad_cam(model, x, class_index=1), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert model.conv.activation.__name__ == "sigmoid"


def test_tfprobe_cam_is_reachable_after_a_plain_import():
    import subprocess
    import sys

    code = "import sys, tfprobe; assert 'tensorflow' not in sys.modules; print(tfprobe.cam.grad_cam.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "grad_cam", out.stderr[-2000:]


def test_1d_feature_maps_are_one_row_per_channel():
    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv1D(5, 3, name="conv")
    model = keras.Sequential([keras.Input((20, 2)), conv, keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(3, 20, 2)).astype("float32")
    result = looks.feature_maps(model, x, "conv", channels=8)  # more than the layer has: all 5
    direct = np.asarray(conv(x))  # (3, 18, 5)
    assert result.grid.shape == (3, 5, 18) and result.channels.shape == (3, 5)
    for i in range(3):
        for row, channel in zip(result.grid[i], result.channels[i]):
            line = direct[i, :, channel]
            np.testing.assert_allclose(row, (line - line.min()) / (line.max() - line.min()), atol=1e-5)


def test_binary_heads_score_class_1_by_the_logit_and_class_0_by_its_negation():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    x = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    for class_index in (0, 1):
        g, c = looks.grad_cam(model, x, class_index=class_index), looks.cam(model, x, class_index=class_index)
        assert g.sum() > 0 and g.sum() / c.sum() == pytest.approx(1 / 36, rel=1e-3)
    predicted = (np.asarray(model(x))[:, 0] > 0.5).astype(int)
    np.testing.assert_array_equal(looks.grad_cam(model, x), looks.grad_cam(model, x, class_index=predicted))


# ---------------------------------------------------------------- patch-token models (ViT, MLP-Mixer)


class Patches(keras.layers.Layer):
    """keras-io's ViT / MLP-Mixer `Patches`: non-overlapping patches, row by row, as `(batch, patches, dims)`."""

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        patches = keras.ops.image.extract_patches(images, size=self.patch_size)
        shape = keras.ops.shape(patches)
        return keras.ops.reshape(patches, (shape[0], shape[1] * shape[2], shape[3]))


def vit(image=32, patch=8, dim=32, classes=10):
    """keras-io's "Image classification with Vision Transformer", shrunk: one block, 16 tokens of 32 values."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((image, image, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)  # preprocessing: a 2D output, but not features
    tokens = layers.Dense(dim, name="patch_projection")(Patches(patch, name="patches")(x))
    positions = layers.Embedding((image // patch) ** 2, dim, name="position")(keras.ops.arange((image // patch) ** 2))
    encoded = tokens + positions
    h = layers.LayerNormalization(epsilon=1e-6, name="norm1")(encoded)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=dim, dropout=0.1, name="attention")(h, h)
    encoded = layers.Add(name="skip1")([h, encoded])
    h = layers.LayerNormalization(epsilon=1e-6, name="norm2")(encoded)
    h = layers.Dense(dim, activation="gelu", name="mlp")(h)
    encoded = layers.Add(name="skip2")([h, encoded])
    representation = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(encoded)
    features = layers.Dropout(0.5)(layers.Flatten(name="flatten")(representation))
    return keras.Model(inputs, layers.Dense(classes, name="logits")(features), name="vit")


def mixer(image=32, patch=4, dim=16, classes=5):
    """keras-io's "MLP-Mixer" shape, shrunk: 64 tokens, one mixing block, global average pooling, dense head."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((image, image, 3))
    x = layers.Dense(dim, name="embed")(Patches(patch, name="patches")(inputs))
    h = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    h = layers.Permute((2, 1), name="to_channels")(h)
    h = layers.Dense((image // patch) ** 2, activation="gelu", name="token_mixing")(h)
    x = layers.Add(name="mix")([layers.Permute((2, 1), name="to_tokens")(h), x])
    x = layers.Dense(dim, activation="gelu", name="channel_mixing")(x)
    pooled = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="head")(pooled), name="mixer")


def grid_grad_cam_oracle(model, x, layer, rows, cols):
    """Grad-CAM written out for one token layer laid on a `rows x cols` grid, through a sub-model."""
    import tensorflow as tf

    head = model.layers[-1]  # a Dense: the class score is its logit (before any softmax)
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, head.input])
    with tf.GradientTape() as tape:
        tokens, features = probe(x, training=False)
        logits = features @ head.kernel + head.bias
        score = tf.reduce_sum(tf.gather(logits, tf.argmax(logits, axis=1), axis=1, batch_dims=1))
    gradient = tape.gradient(score, tokens).numpy().reshape(len(x), rows, cols, -1)
    a = tokens.numpy().reshape(len(x), rows, cols, -1)
    maps = np.maximum((gradient.mean(axis=(1, 2), keepdims=True) * a).sum(-1), 0)
    return tf.image.resize(maps[..., None], x.shape[1:3])[..., 0].numpy()


@pytest.mark.parametrize("build, layer, grid", [(vit, "final_norm", (4, 4)), (mixer, "channel_mixing", (8, 8))])
def test_patch_token_models_get_grad_cam_on_the_image_grid(build, layer, grid):
    model = build()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert looks.default_layer(model, x) == layer  # the last token layer, not the 2D preprocessing output
    maps = looks.grad_cam(model, x)
    assert maps.shape == (4, 32, 32)
    np.testing.assert_allclose(maps, grid_grad_cam_oracle(model, x, layer, *grid), rtol=2e-3, atol=2e-3 * maps.max())
    assert looks.feature_maps(model, x, channels=4).maps.shape == (4, 4, *grid)


def test_cam_of_a_pooled_token_head_is_laid_on_the_image_grid():
    model = mixer()
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    class_maps, gradient_maps = looks.cam(model, x), looks.grad_cam(model, x, layer="channel_mixing")
    assert class_maps.shape == gradient_maps.shape == (3, 32, 32)
    for g, c in zip(gradient_maps, class_maps):
        if c.max() > 0:
            assert np.corrcoef(g.ravel(), c.ravel())[0, 1] >= 0.999
    assert gradient_maps.sum() / class_maps.sum() == pytest.approx(1 / 64, rel=1e-3)


def test_tokens_that_are_no_grid_of_the_image_are_refused_with_the_reason():
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.Reshape((7, 8), name="tokens")(layers.Dense(56, name="project")(layers.Flatten()(inputs)))
    x = layers.Dense(8, activation="relu", name="mix")(x)
    model = keras.Model(inputs, layers.Dense(3, name="out")(layers.Flatten()(x)), name="seven")
    x = np.zeros((2, 28, 28, 1), "float32")
    with pytest.raises(
        ValueError,
        match=r"^`layer` cannot be chosen automatically: no layer of model 'seven' has a "
        r"2D spatial output to lay on its \(28, 28, 1\) input images; its sequence "
        r"outputs \(such as 'mix', \(2, 7, 8\)\) do not form a grid of the image",
    ):
        looks.grad_cam(model, x)
    with pytest.raises(
        ValueError,
        match=r"`layer` 'mix' outputs 7 positions .* do not form a grid of the \(28, 28\) "
        r"input images",
    ):
        looks.grad_cam(model, x, layer="mix")


def test_looks_draws_a_patch_token_model_s_rgb_inputs_as_images(tmp_path):
    from tfprobe.looks import LooksAnalysis
    from tfprobe.reference import ReferenceData
    from tfprobe.reference.looks import display, overlay

    model = vit()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    analysis = LooksAnalysis(tmp_path, examples=2)
    reference = ReferenceData((x, np.array([1, 2, 3])))
    assert analysis.check(model, reference) == ("final_norm", ["final_norm"])
    _, _, _, path, _, kind = analysis._look(model, reference)
    assert kind == "image"
    analysis.run(model, reference, step=1)
    analysis.close()
    import tensorflow as tf

    from tfprobe import metadata
    from tfprobe.logs.events import read_events

    (event,) = list(read_events(str(next(tmp_path.glob("*.tfprobe-looks")))))[1:]
    images = {
        v.tag: tf.io.decode_png(tf.make_ndarray(v.tensor)[2]).numpy()
        for v in event.summary.value
        if v.metadata.plugin_data.plugin_name == "images" or v.tag.endswith(("input", "final_norm"))
    }
    heat = looks.grad_cam(model, x[:2])
    for i in range(2):
        drawn = images[metadata.looks_tag(i, "gradcam", "final_norm")]
        assert drawn.shape == (128, 128, 3)  # the 32 x 32 RGB image, enlarged 4x: not a waveform strip
        np.testing.assert_allclose(
            drawn[::4, ::4].astype("float32") / 255, overlay(display(x[i], "image"), heat[i]), atol=1 / 255 + 1e-6
        )
        assert images[metadata.looks_tag(i, "input")].shape == (128, 128, 3)
