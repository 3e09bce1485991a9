"""Shared helpers of the model zoos (`test_zoo_healthy.py`, `test_zoo_pathology.py`): record a short
`fit` with `LayerProbe(record_freq=1, log_freq=1)` (one window per step) and diagnose it."""

from __future__ import annotations

import numpy as np

import tfprobe


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


def record_and_diagnose(model, log_dir, x, y, loss="mse", learning_rate=0.0, batch_size=16, graph=True,
                        gradients=False, optimizer=None):
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
    return tfprobe.diagnose(tfprobe.read_logdir(log_dir), layers), layers


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
