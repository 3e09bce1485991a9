"""`LooksAnalysis`: Grad-CAM overlays and feature maps as TensorBoard images, checked against `tfprobe.cam`."""

import json
import urllib.parse

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.tensorboard import http_get, tensorboard_server

import tfprobe
from tfprobe import cam, metadata
from tfprobe.logs.events import read_events
from tfprobe.looks import LooksAnalysis
from tfprobe.reference import ReferenceData
from tfprobe.reference.looks import colormap, display, enlarge, orient, overlay


def small_cnn(shape=(12, 12, 1), classes=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax", name="head"),
        ]
    )


def images_and_scalars(log_dir):
    """`{step: {tag: decoded image or scalar}}` from the looks event file of `log_dir`."""
    (path,) = [str(p) for p in log_dir.glob("*.tfprobe-looks")]
    found = {}
    for event in list(read_events(path))[1:]:
        for value in event.summary.value:
            array = tf.make_ndarray(value.tensor)
            if array.dtype == object:
                width, height, png = array
                image = tf.io.decode_png(png).numpy()
                assert image.shape[:2] == (int(height), int(width))
                found.setdefault(event.step, {})[value.tag] = image
            else:
                found.setdefault(event.step, {})[value.tag] = float(array)
    return found


def shrink(image, like):
    """Undoes `enlarge` (nearest neighbour) back to the shape of `like`."""
    factor = image.shape[0] // like.shape[0]
    return image[::factor, ::factor].astype(np.float32) / 255


def test_images_are_the_grad_cam_and_feature_maps_of_the_predicted_and_true_class(tmp_path):
    model = small_cnn()
    x = np.random.default_rng(0).random((6, 12, 12, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    looks = LooksAnalysis(tmp_path, examples=4, feature_layers="conv1", channels=4)
    reference = ReferenceData((x, y), batch_size=4)
    assert looks.check(model, reference) == ("conv2", ["conv1"])
    looks.run(model, reference, step=10)
    looks.run(model, reference, step=20)
    looks.close()
    steps = images_and_scalars(tmp_path)
    assert sorted(steps) == [10, 20]
    assert metadata.looks_tag(0, "input") in steps[10] and metadata.looks_tag(0, "input") not in steps[20]
    probabilities = np.asarray(model(x[:4]))
    predicted = cam.grad_cam(model, x[:4])
    true = cam.grad_cam(model, x[:4], class_index=y[:4])
    grids = cam.feature_maps(model, x[:4], "conv1", channels=4).grid
    class_maps = cam.cam(model, x[:4])
    for i in range(4):
        got = steps[20]
        assert got[metadata.looks_tag(i, "predicted_class")] == probabilities[i].argmax()
        assert got[metadata.looks_tag(i, "probability")] == pytest.approx(probabilities[i].max(), rel=1e-5)
        assert got[metadata.looks_tag(i, "true_class")] == y[i]
        background = display(x[i], "image")
        for kind, heat in (("gradcam", predicted[i]), ("gradcam_true", true[i]), ("cam", class_maps[i])):
            image = got[metadata.looks_tag(i, kind, "conv2")]
            np.testing.assert_allclose(shrink(image, background), overlay(background, heat), atol=1 / 255 + 1e-6)
        feature_image = got[metadata.looks_tag(i, "features", "conv1")]
        np.testing.assert_allclose(shrink(feature_image, grids[i])[..., 0], grids[i], atol=1 / 255 + 1e-6)
        np.testing.assert_allclose(
            shrink(steps[10][metadata.looks_tag(i, "input")], background), background, atol=1 / 255 + 1e-6
        )
    assert looks.bytes_written > looks.last_step_bytes > 0


def test_waveforms_get_a_heat_strip_and_spectrograms_time_across_low_frequencies_below(tmp_path):
    keras.utils.set_random_seed(0)
    wave_model = keras.Sequential(
        [
            keras.Input((64, 1)),
            keras.layers.Conv1D(4, 5, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    waves = np.sin(np.linspace(0, 20, 64 * 3)).reshape(3, 64, 1).astype("float32")
    looks = LooksAnalysis(tmp_path / "wave", examples=3)
    looks.run(wave_model, ReferenceData(waves), step=1)
    looks.close()
    got = images_and_scalars(tmp_path / "wave")[1]
    strip = got[metadata.looks_tag(0, "gradcam", "conv")]
    assert strip.shape[1] == 64 * 2 and strip.shape[0] == 80 * 2  # 64 + 16 rows, enlarged twice to >= 128
    heat = cam.grad_cam(wave_model, waves[:1])[0]
    bottom = strip[-1, ::2].astype(np.float32) / 255  # the heat strip's last row: the colour of each column's heat
    np.testing.assert_allclose(bottom, colormap(heat / heat.max()), atol=1 / 255 + 1e-6)
    assert metadata.looks_tag(2, "true_class") not in got and metadata.looks_tag(2, "gradcam_true", "conv") not in got

    flat = keras.Sequential([keras.Input((64,)), keras.layers.Reshape((64, 1)), *wave_model.layers])  # (N, T) inputs
    looks = LooksAnalysis(tmp_path / "flat", examples=1)
    looks.run(flat, ReferenceData(waves[:, :, 0]), step=1)
    looks.close()
    np.testing.assert_array_equal(
        images_and_scalars(tmp_path / "flat")[1][metadata.looks_tag(0, "gradcam", "conv")], strip
    )

    spectrograms = np.zeros((2, 20, 10, 1), "float32")  # (time, frequency): energy in the lowest frequency bins only
    spectrograms[:, :, :3] = 1.0
    looks = LooksAnalysis(tmp_path / "spec", examples=2, input_kind="spectrogram", feature_layers=[])
    looks.run(small_cnn((20, 10, 1)), ReferenceData(spectrograms), step=1)
    looks.close()
    got = images_and_scalars(tmp_path / "spec")[1]
    image = got[metadata.looks_tag(0, "input")]
    assert image.shape[:2] == (10 * 7, 20 * 7)  # frequency down, time across, enlarged to >= 128
    assert image[-1, 0, 0] == 255 and image[0, 0, 0] == 0  # low frequencies at the bottom
    np.testing.assert_array_equal(orient(np.arange(6).reshape(3, 2)), [[1, 3, 5], [0, 2, 4]])
    assert not any(metadata.parse_looks_tag(t)[1] == "features" for t in got)


def test_tensorboard_images_tab_lists_and_serves_the_images(tmp_path):
    run = tmp_path / "train"
    model = small_cnn()
    x = np.random.default_rng(1).random((4, 12, 12, 1), dtype=np.float32)
    looks = LooksAnalysis(run, examples=2)
    for step in (5, 10):
        looks.run(model, ReferenceData((x, np.array([0, 1, 2, 0]))), step)
    looks.close()
    tag = metadata.looks_tag(1, "gradcam", "conv2")
    with tensorboard_server(tmp_path) as server:
        tags = server.wait_until(lambda t: tag in t.get("train", {}), route="/data/plugin/images/tags")
        expected = {
            metadata.looks_tag(i, k, layer)
            for i in (0, 1)
            for k, layer in (
                ("input", None),
                ("gradcam", "conv2"),
                ("gradcam_true", "conv2"),
                ("cam", "conv2"),
                ("features", "conv1"),
                ("features", "conv2"),
            )
        }
        assert set(tags["train"]) == expected
        query = urllib.parse.urlencode({"run": "train", "tag": tag, "sample": 0})
        status, body = http_get(f"{server.base}/data/plugin/images/images?{query}")
        entries = json.loads(body)
        assert status == 200 and [e["step"] for e in entries] == [5, 10]
        status, png = http_get(f"{server.base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        assert status == 200 and png.startswith(b"\x89PNG\r\n\x1a\n")
        status, body = http_get(f"{server.base}/data/plugin/scalars/tags")
        assert metadata.looks_tag(0, "probability") in json.loads(body)["train"]


def test_weights_after_fit_are_unchanged_by_the_reference_steps(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 12, 12, 1), dtype=np.float32), rng.integers(0, 3, 64)
    looks = LooksAnalysis(tmp_path, examples=4)

    class ReferenceStep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            looks.run(self.model, ReferenceData((x[:8], y[:8])), epoch)

    weights = []
    for callbacks in ([], [ReferenceStep()]):
        model = small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
        weights.append(model.get_weights())
    looks.close()
    assert sorted(images_and_scalars(tmp_path)) == [0, 1]
    for before, after in zip(*weights):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "kwargs, data, error, message",
    [
        ({"examples": 0}, None, ValueError, r"`examples` must be an integer in \[1, 100\]. Received: examples=0"),
        ({"input_kind": "video"}, None, ValueError, r"`input_kind` must be one of .*input_kind='video'"),
        ({"channels": 0}, None, ValueError, r"`channels` must be a positive integer"),
        ({"feature_layers": "nope"}, None, ValueError, r"`feature_layers`.*feature_layers='nope'.*Available"),
        ({"feature_layers": "head"}, None, ValueError, r"`feature_layers` must be a layer with a 1D or 2D spatial"),
        ({"layer": "head"}, None, ValueError, r"`layer` must be a layer with a 1D or 2D spatial output"),
        ({"input_kind": "waveform"}, None, ValueError, r"`input_kind` 'waveform' needs a 1D Grad-CAM layer; 'conv2'"),
        ({}, (np.zeros((2, 10, 12, 1)),), ValueError, r"`reference_data` must be examples of shape \(12, 12, 1\)"),
        ({}, (np.zeros((2, 12, 12, 1)), np.array([0, 7])), ValueError, r"`reference_data` labels must be class"),
    ],
)
def test_bad_arguments_are_named_before_training(tmp_path, kwargs, data, error, message):
    model = small_cnn()
    reference = ReferenceData(data if data is not None else (np.zeros((2, 12, 12, 1)), np.array([0, 1])))
    with pytest.raises(error, match=message):
        LooksAnalysis(tmp_path, **kwargs).check(model, reference)
    assert not list(tmp_path.glob("*.tfprobe-looks"))


def test_enlarge_keeps_large_images():
    assert enlarge(np.zeros((200, 10, 3))).shape == (200, 10, 3)


def test_a_run_after_close_starts_a_new_file_with_its_own_metadata(tmp_path):
    model = small_cnn()
    reference = ReferenceData(np.random.default_rng(0).random((2, 12, 12, 1), dtype=np.float32))
    looks = LooksAnalysis(tmp_path, examples=1, feature_layers=[])
    for step in (1, 2):
        looks.run(model, reference, step)
        looks.close()
    looks.close()
    files = sorted(tmp_path.glob("*.tfprobe-looks"))
    assert len(files) == 2
    for path, step in zip(files, (1, 2)):
        (event,) = list(read_events(str(path)))[1:]
        assert event.step == step
        gradcam = [v for v in event.summary.value if v.tag == metadata.looks_tag(0, "gradcam", "conv2")]
        assert gradcam[0].metadata.plugin_data.plugin_name == "images"


def test_next_to_a_layer_probe_both_record_and_the_model_is_restored(tmp_path):
    import tfprobe

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 12, 12, 1), dtype=np.float32), rng.integers(0, 3, 64)
    reference = ReferenceData((x[:4], y[:4]))
    looks = LooksAnalysis(tmp_path / "run", examples=2)

    class ReferenceStep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            looks.run(self.model, reference, int(self.model.optimizer.iterations.numpy()))

    weights = []
    for extra in ([], [ReferenceStep()]):
        model = small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
        probe = tfprobe.LayerProbe(tmp_path / ("run" if extra else "plain"), record_freq=1, log_freq=4)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[probe, *extra])
        weights.append(model.get_weights())
        assert not any("call" in layer.__dict__ for layer in model.layers)
    looks.close()
    for before, after in zip(*weights):
        np.testing.assert_array_equal(before, after)
    assert sorted(images_and_scalars(tmp_path / "run")) == [4, 8]
    stats = tfprobe.read_logdir(tmp_path)
    assert set(stats["run"]) == {"run", "plain"} and "conv2" in set(stats["layer"])


def test_layer_probe_writes_looks_at_its_reference_steps(tmp_path):
    """`LayerProbe(reference_data=..., looks_examples=k)`: the reference steps write the images of the first k."""
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 12, 12, 1)).astype("float32"), rng.integers(0, 3, 24)
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(x[:10], y[:10]), reference_freq=1, looks_examples=2)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[probe])
    found = images_and_scalars(tmp_path)
    assert set(found) == {3, 6}  # the end of each epoch (and of training, the same step)
    assert {tag.split("/")[1] for tag in found[6]} == {"example_00", "example_01"}
    with pytest.raises(ValueError, match="`looks_examples` needs `reference_data`"):
        tfprobe.LayerProbe(tmp_path, looks_examples=2)


@pytest.mark.parametrize("kwargs, drawn", [({}, "image"), ({"looks_input_kind": "spectrogram"}, "spectrogram")])
def test_layer_probe_draws_looks_as_its_looks_input_kind(tmp_path, kwargs, drawn):
    """`LayerProbe(looks_input_kind=...)` is `LooksAnalysis(input_kind=...)`; the default draws 2D inputs as images."""
    model = small_cnn((20, 10, 1))  # (time, frequency): not square, so a spectrogram's image is the transpose
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 20, 10, 1)).astype("float32"), rng.integers(0, 3, 16)
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(x[:4], y[:4]), looks_examples=2, **kwargs)
    assert probe.looks_input_kind == kwargs.get("looks_input_kind", "auto")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    got = images_and_scalars(tmp_path)[2]
    heat = cam.grad_cam(model, x[:2])  # the weights of the last reference step, at the end of training
    for i in range(2):
        background = display(x[i], drawn)
        assert background.shape[:2] == ((10, 20) if drawn == "spectrogram" else (20, 10))
        np.testing.assert_allclose(
            shrink(got[metadata.looks_tag(i, "input")], background), background, atol=1 / 255 + 1e-6
        )
        expected = overlay(background, orient(heat[i]) if drawn == "spectrogram" else heat[i])
        np.testing.assert_allclose(
            shrink(got[metadata.looks_tag(i, "gradcam", "conv2")], background), expected, atol=1 / 255 + 1e-6
        )


def test_layer_probe_names_looks_input_kind_when_the_model_cannot_be_drawn_so(tmp_path):
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((8, 12, 12, 1), "float32"), np.zeros(8, "int32")
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(x, y), looks_examples=2, looks_input_kind="waveform")
    with pytest.raises(
        ValueError,
        match=r"^`looks_input_kind` 'waveform' needs a 1D Grad-CAM layer; 'conv2' has a "
        r"2D output. Received: looks_input_kind='waveform'$",
    ):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    assert not any("call" in layer.__dict__ for layer in model.layers)  # the model was not instrumented
    assert not list(tmp_path.glob("*.tfprobe-*"))  # nor any reference file opened (and left empty)
