"""`tfprobe.layer_kinds`: the one table of what Keras layer classes mean, TF-free, read by every side."""

import ast
import subprocess
import sys

import keras

from tensorboard_plugin_tfprobe import layout
from tfprobe import findings, layer_kinds
from tfprobe.recording import selection
from tfprobe.reference import saliency


def test_the_table_imports_no_tensorflow_or_keras():
    code = "import sys, tfprobe.layer_kinds; print([m for m in ('tensorflow', 'keras') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with open(layer_kinds.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "re"}, imported  # nothing but the standard library


def test_names_turned_into_classes_are_all_keras_layers():
    # `keras_classes` leaves out names Keras lacks: a misspelt name would silently stop matching
    for names in (
        layer_kinds.POOLING_CLASSES,
        layer_kinds.PASS_THROUGH_CLASSES,
        layer_kinds.GLOBAL_AVERAGE_POOLING_CLASSES,
    ):
        missing = [n for n in names if not hasattr(keras.layers, n)]
        assert not missing, missing


def test_recorder_dashboard_findings_and_saliency_read_the_same_table():
    assert tuple(c.__name__ for c in selection.POOLING_CLASSES) == layer_kinds.POOLING_CLASSES
    assert layout.CATEGORY_CLASSES["pooling"] == layer_kinds.POOLING_CLASSES
    assert all(layout.category_of(n) == "pooling" for n in layer_kinds.POOLING_CLASSES)
    assert all(layout.category_of(n) == "normalization" for n in layer_kinds.NORMALIZATION_CLASSES)
    assert findings.ROUTING_CLASS is layer_kinds.ROUTING_CLASS
    assert all(findings.is_normalization(n) for n in layer_kinds.NORMALIZATION_CLASSES)
    assert tuple(c.__name__ for c in saliency._NO_OP_LAYERS) == layer_kinds.PASS_THROUGH_CLASSES


def test_saturation_bounds_come_from_the_bounded_activations():
    for name, bounds in layer_kinds.BOUNDED_ACTIVATIONS.items():
        if hasattr(keras.activations, name):
            assert selection.saturation_bounds(keras.layers.Dense(2, activation=name)) == bounds, name
    assert selection.saturation_bounds(keras.layers.Softmax()) == (0.0, 1.0)
    assert selection.saturation_bounds(keras.layers.Dense(2, activation="relu")) is None
