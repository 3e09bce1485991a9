"""The model zoos (`test_zoo_healthy.py`, `test_zoo_pathology.py`, `test_zoo_recording.py`,
`test_gradient_findings.py`, the corpus harness): the twelve `keras.applications` models and the small healthy
architectures (builders `() -> (model, input shape, vocabulary or None)`), a short `fit` with
`LayerProbe(record_freq=1, log_freq=1)` (one window per step) and its diagnosis, and what the Keras graph says
must be recorded."""

from __future__ import annotations

import contextlib

import keras
import numpy as np

import tfprobe

from . import models

L = keras.layers


def application(name, size, **kwargs):
    """A builder `() -> (model, input shape, None)` of `keras.applications.<name>` (`weights=None`, 10 classes)."""

    def build():
        import keras

        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10, **kwargs)
        return model, (size, size, 3), None

    build.__name__ = name
    return build


# The twelve families, each at the smallest input it accepts (Xception 71, InceptionV3 75, the others 32).
APPLICATIONS = [
    application("MobileNetV2", 32),
    application("MobileNetV3Small", 32),
    application("ResNet50", 32),
    application("ResNet50V2", 32),
    application("DenseNet121", 32),
    application("EfficientNetB0", 32),
    application("EfficientNetV2B0", 32),
    application("ConvNeXtTiny", 32),
    application("Xception", 71),
    application("NASNetMobile", 32),
    application("VGG16", 32),
    application("InceptionV3", 75),
]


# The small healthy architectures (functional, 10 classes).


def small_cnn():
    inp = keras.Input((32, 32, 3))
    x = inp
    for filters in (16, 32):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (32, 32, 3), None


def transformer_block():
    inp = keras.Input((16, 32))
    att = L.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(inp, inp)
    x = L.LayerNormalization(name="norm1")(L.Add(name="add1")([inp, att]))
    ff = L.Dense(32, name="ff2")(L.Dense(64, activation="relu", name="ff1")(x))
    x = L.LayerNormalization(name="norm2")(L.Add(name="add2")([x, ff]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (16, 32), None


def recurrent_text():
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(1000, 32, name="embedding")(inp)
    x = L.LSTM(32, return_sequences=True, name="lstm")(x)
    x = L.GRU(32, name="gru")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (20,), 1000


def conv1d_audio():
    inp = keras.Input((256, 1))
    x = L.MaxPooling1D(4)(L.Conv1D(16, 9, activation="relu", name="conv1")(inp))
    x = L.GlobalAveragePooling1D()(L.Conv1D(32, 9, activation="relu", name="conv2")(x))
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (256, 1), None


def mlp():
    return (
        models.mlp(("h1", "h2", "predictions"), (32, 64, 64, 10), ("relu", "relu", "softmax"), functional=True),
        (32,),
        None,
    )


def keras_inputs(model):
    """`{layer name: [names of the layers feeding it]}` of a flat functional model, from its Keras graph
    (model inputs left out): what the recorder writes as `inputs` for single-output, single-call layers."""
    model_inputs = {t._keras_history.operation.name for t in model.inputs}
    out = {}
    for layer in model.layers:
        names = [t._keras_history.operation.name for node in layer._inbound_nodes for t in node.input_tensors]
        out[layer.name] = [n for n in dict.fromkeys(names) if n not in model_inputs]
    return out


def with_graph(layers, model):
    """`layers` with the `inputs` column taken from the Keras graph when the recorder did not write it."""
    if "inputs" in layers.columns and layers["inputs"].notna().any():
        return layers
    graph = keras_inputs(model)
    return layers.assign(inputs=[graph.get(name) for name in layers["layer"]])


def record_and_diagnose(
    model, log_dir, x, y, loss="mse", learning_rate=0.0, batch_size=16, graph=True, gradients=False, optimizer=None
):
    """Fits one epoch of `x` (one window per step) and returns `(findings, layers)`.

    `learning_rate=0.0` keeps a planted pathology as built (the update is `w - 0 * g`), so each window
    shows the same network; the pathologies are there from the first step. `graph`: fill in the
    `inputs` column from the Keras graph if the recorder did not write it (see `with_graph`).
    `gradients`: record the backward pass too (`LayerProbe(gradients=True)`); `optimizer`: instead of
    `SGD(learning_rate)`.
    """
    import keras

    from tfprobe.callback import LayerProbe

    model.compile(optimizer or keras.optimizers.SGD(learning_rate), loss)
    probe = LayerProbe(log_dir, record_freq=1, log_freq=1, histogram_freq=0, kernel="graph", gradients=gradients)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[probe])
    layers = tfprobe.read_layers(log_dir)
    if graph:
        layers = with_graph(layers, model)
    findings = tfprobe.diagnose(tfprobe.read_logdir(log_dir), layers)
    findings.attrs["live_incidents"] = probe.incidents  # what the probe alerted while training (alerts=True)
    return findings, layers


def synthetic(n, shape, classes=None, seed=0):
    """`n` standard-normal inputs of `shape`, and class labels (or zeros regression targets of width 4)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = (np.arange(n) % classes) if classes else np.zeros((n, 4), "float32")
    return x, y


def run_pathology(build, log_dir, graph=True, **kwargs):
    """`(findings, layers)` of the pathology model `build()` over 4 steps of 16 examples (learning rate 0
    unless `kwargs` of `record_and_diagnose` say otherwise)."""
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    x, y = synthetic(64, (16,))
    loss = "mse"
    if isinstance(model.output, dict):  # side outputs outside the loss
        y, loss = {"out": y}, {"out": "mse"}
    return record_and_diagnose(model, log_dir, x, y, loss=loss, graph=graph, **kwargs)


def run_healthy(build, log_dir, **kwargs):
    """`(findings, layers)` of `build() -> (model, input shape, vocabulary or None)` over 3 SGD steps
    (or as `kwargs` of `record_and_diagnose` say: `gradients=True, optimizer=...`)."""
    import keras

    keras.utils.set_random_seed(0)
    model, shape, vocabulary = build()
    x, y = synthetic(48, shape, classes=10)
    if vocabulary:
        x = (abs(x) * 100).astype("int32") % vocabulary
    kwargs.setdefault("learning_rate", 0.01)
    return record_and_diagnose(model, log_dir, x, y, loss="sparse_categorical_crossentropy", **kwargs)


def not_info(findings):
    return findings[findings["severity"] != "info"]


# -- what the Keras graph says must be recorded (test_zoo_recording.py) ------------------------------------

# The README's rule for `saturation_fraction` (bounded activations), restated here as the oracle.
BOUNDED_ACTIVATIONS = {"sigmoid", "hard_sigmoid", "softmax", "tanh", "softsign", "hard_tanh", "relu6"}


def unwrapped(layer):
    """The layer a `TimeDistributed` or `Bidirectional` applies (the README: wrappers are judged as it)."""
    import keras

    while isinstance(layer, (keras.layers.TimeDistributed, keras.layers.Bidirectional)):
        layer = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer.forward_layer
    return layer


def bounded(operation):
    """True if the README says `saturation_fraction` is recorded for the (single) output of `operation`."""
    import keras

    layer = unwrapped(operation)
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is not None and not layer.negative_slope and not layer.threshold
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return isinstance(layer, keras.layers.Softmax) or activation in BOUNDED_ACTIVATIONS


def expected_stats(operation, tensor, n_outputs):
    """The statistics `tfprobe.metadata` documents for one floating output `tensor` (a KerasTensor)."""
    from tfprobe import metadata

    shape = tuple(tensor.shape)
    masked = getattr(tensor, "_keras_mask", None) is not None
    names = set(metadata.ACTIVATION_STATS) - {"dead_unit_fraction", "hoyer_sparsity", "saturation_fraction"}
    if len(shape) >= 2 and shape[-1]:
        names.add("dead_unit_fraction")
    if np.prod(shape[2 if masked else 1 :], dtype=int) > 1:  # values per example (per position under a mask)
        names.add("hoyer_sparsity")
    if n_outputs == 1 and bounded(operation):
        names.add("saturation_fraction")
    if "Pooling" in type(unwrapped(operation)).__name__:
        names.update(metadata.POOLING_STATS)
    return names


def graph_series(model, prefix=""):
    """`{series: {"operation", "stats", "pooling"}}` for every floating output of every node of the functional
    `model` (layers and the operations that are not layers; nested models entered), read off the
    Keras graph (`_nodes_by_depth`, each operation's `_inbound_nodes`) independently of tfprobe's selection,
    named as `tfprobe.metadata.series_name` names them (`:k` output, `#c` call of a shared layer)."""
    import keras

    from tfprobe import metadata

    if isinstance(model, keras.Sequential):  # its graph is the functional model it builds
        model = model._functional
    out = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):  # the order the model runs them in
        for node in model._nodes_by_depth[depth]:
            operation = node.operation
            if isinstance(operation, keras.layers.InputLayer):
                continue
            path = prefix + operation.name
            if isinstance(operation, keras.Model):
                out.update(graph_series(operation, path + "/"))
                continue
            index = operation._inbound_nodes.index(node)
            call = sum(f"{id(operation)}_ib-{i}" in model._nodes for i in range(index))
            for k, tensor in enumerate(node.outputs):
                if "float" in str(tensor.dtype):
                    out[metadata.series_name(path, k, len(node.outputs), call)] = {
                        "operation": operation,
                        "stats": expected_stats(operation, tensor, len(node.outputs)),
                        "pooling": "Pooling" in type(unwrapped(operation)).__name__,
                    }
    return out


def zoo_data(n, shape, vocabulary=None, classes=10, seed=0):
    """`n` inputs of `shape` with class labels: standard-normal floats, or token ids in `[1, vocabulary)` with
    example `i` padded by `i % (length // 2)` trailing zeros (what `Embedding(mask_zero=True)` masks)."""
    x, y = synthetic(n, shape, classes=classes, seed=seed)
    if vocabulary:
        x = 1 + (abs(x) * 100).astype("int32") % (vocabulary - 1)
        for i in range(n):
            padding = i % (shape[0] // 2)
            if padding:
                x[i, -padding:] = 0
    return x, y


@contextlib.contextmanager
def grappler_off(*optimizers):
    """Turns Grappler optimizers off (`"arithmetic_optimization"`, `"constant_folding"`, `"remapping"`, ...)
    for the block, then restores them.

    The README's workaround for the probe's observer effect: a rewrite that needs an intermediate result to
    have a single consumer (BatchNormalization's arithmetic, scalar chains, a MatMul + BiasAdd + Add fusion)
    does not happen once the probe reads that result, and the float32 results differ in the last bits.
    """
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({name: False for name in optimizers})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({name: before.get(name, True) for name in optimizers})


def fit_with_and_without_probe(build, log_dir, steps=2, batch_size=4, **probe_kwargs):
    """Trains `build() -> (model, input shape, vocabulary)` for `steps` steps twice from the same seeds, weights
    and data, without then with `LayerProbe(log_dir, record_freq=1, log_freq=1, **probe_kwargs)`.

    Returns `(probed model, runs)`, `runs` a `[plain, probed]` list of `(losses per step, History, weights)`:
    the weights are the model's (trainable and not) and the optimizer's.
    """
    import keras

    from tfprobe.callback import LayerProbe

    runs, initial, model = [], None, None
    for probe in (None, LayerProbe(log_dir, record_freq=1, log_freq=1, **probe_kwargs)):
        keras.utils.set_random_seed(0)
        model, shape, vocabulary = build()
        initial = initial if initial is not None else model.get_weights()
        model.set_weights(initial)
        if not model.compiled:
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        x, y = zoo_data(steps * batch_size, shape, vocabulary)
        losses = []
        per_step = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda _, logs, out=losses: out.append(float(logs["loss"]))
        )
        callbacks = [per_step] + ([probe] if probe else [])
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        weights = model.get_weights() + [np.asarray(v) for v in model.optimizer.variables]
        runs.append((losses, history.history, weights))
    return model, runs
