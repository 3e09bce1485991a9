"""The harness of the corpus of official Keras examples (`tests/corpus/<example>.py`, `tests/examples/test_corpus.py`).

Each example module keeps the model-building and `compile` code of one keras-io example (widths shrunk), its
data replaced by synthetic arrays of the same structure with a learnable signal, and exposes:

- `ORIGIN`: the keras-io path it comes from (also in its header comment);
- `SUPPORTS_XLA`: whether the example's step compiles with `jit_compile=True` without the probe;
- `build(jit_compile) -> Built`: the compiled model, its data and the `fit` keyword arguments (its own
  `callbacks` among them: they run before the probe);
- optionally `reference(built)`: what to pass as `reference_data` (default: the first 32 examples of `x, y`),
  `LOOKS`: whether `looks_examples` applies (an image classifier), `healthy = False` with `true_problem()`.

`run_example(module, setting, jit, tmp)` trains the example without then with the probe from the same seeds and
returns a `Result` with everything the tests and the results table (`python -m corpus.table`) look at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import math
import re
import time
import warnings

import numpy as np

import tfprobe

# The examples, in the order of the results table. The fast subset runs in the default suite.
EXAMPLES = [
    "mnist_convnet",
    "image_classification_from_scratch",
    "convmixer",
    "oxford_pets_segmentation",
    "autoencoder",
    "vit",
    "object_detection_vit",
    "mlp_mixer",
    "text_classification_from_scratch",
    "bidirectional_lstm_imdb",
    "text_classification_transformer",
    "timeseries_classification_from_scratch",
    "timeseries_transformer",
    "timeseries_weather_forecasting",
    "timeseries_anomaly_detection",
    "speaker_recognition",
    "dcgan",
    "vae",
    "knowledge_distillation",
    "siamese_contrastive",
    "metric_learning",
    "structured_data_classification",
    "wgan_gp",
    "conv_lstm",
    "pointnet",
    "super_resolution_sub_pixel",
    "involution",
    "semisupervised_simclr",
    "lstm_seq2seq",
    "neural_machine_translation_with_transformer",
    "captcha_ocr",
    "collaborative_filtering_movielens",
    "timeseries_traffic_forecasting",
    "vq_vae",
    "multi_label_classification",
    "image_classification_3d",
]
FAST = ["mnist_convnet", "timeseries_classification_from_scratch", "text_classification_from_scratch"]

# The two probes of issue 23: the default one, and every step recorded with the backward pass.
SETTINGS = {
    "default": {},
    "gradients": {"record_freq": 1, "log_freq": 10, "gradients": True},
}

# History with the probe against without: relative difference allowed per value (the README's observer effect:
# Grappler rewrites an intermediate result once the probe reads it, float32 results differ in the last bits
# and 30 steps of Adam carry that on). Examples with a larger, known difference say so in `HISTORY_RTOL`.
HISTORY_RTOL = 1e-4


@dataclasses.dataclass
class Built:
    model: object
    x: object
    y: object = None
    fit: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Result:
    example: str
    setting: str
    jit: bool
    fit_ok: bool = False
    error: str = ""
    steps: int = 0
    expected: int = 0
    missing: list = dataclasses.field(default_factory=list)
    extra: list = dataclasses.field(default_factory=list)
    incomplete: list = dataclasses.field(default_factory=list)
    windows: list = dataclasses.field(default_factory=list)  # the steps of the windows read back
    expected_windows: list = dataclasses.field(default_factory=list)
    layer_names: list = dataclasses.field(default_factory=list)  # the probed model's `layers`, in order
    history_diff: float = math.nan
    # where `history_diff` is above `HISTORY_RTOL`: two runs without the probe against each other (0 when the
    # example is reproducible; above the tolerance, the History comparison says nothing about the probe)
    plain_diff: float = math.nan
    findings: object = None  # non-info findings of `diagnose` on the logs
    incidents: list = dataclasses.field(default_factory=list)  # the live alerts: "severity kind root_layer"
    incident_counts: dict = dataclasses.field(default_factory=dict)  # History's tfprobe_* keys, last epoch
    report_code: int | None = None
    report_error: str = ""
    dashboard_error: str = ""
    probe_warnings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def coverage(self):
        return f"{self.expected - len(self.missing)}/{self.expected}"

    def warning_lines(self):
        if self.findings is None or self.findings.empty:
            return []
        return [f"{f.severity} {f.kind} {f.layer}" for f in self.findings.itertuples()]


def load(name):
    return importlib.import_module(f"corpus.{name}")


def seeded_build(module, jit):
    import keras

    keras.utils.set_random_seed(0)
    return module.build(jit_compile=jit)


def fit(built, callbacks=()):
    """One `fit` of the example; returns (History.history, steps run)."""
    import keras

    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    kwargs = {"epochs": 1, "verbose": 0, **built.fit}
    if isinstance(built.x, (np.ndarray, dict, list, tuple)):
        kwargs.setdefault("shuffle", False)
    own = kwargs.pop("callbacks", [])  # the example's own callbacks
    history = built.model.fit(built.x, built.y, callbacks=[counter, *own, *callbacks], **kwargs)
    return history.history, len(steps)


def history_difference(a, b):
    """The largest relative difference between two `History.history` dicts: `a` without the probe, `b` with it
    (inf if their keys differ, but for the probe's own `tfprobe_*` keys in `b`: its live incident counts)."""
    if set(a) != {key for key in b if not key.startswith("tfprobe_")}:
        return math.inf
    worst = 0.0
    for key in a:
        x, y = np.asarray(a[key], "float64"), np.asarray(b[key], "float64")
        if x.shape != y.shape:
            return math.inf
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y) / np.maximum(np.abs(x), 1e-12))
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0, math.inf if np.isnan(diff).any() else 0.0)
    return worst


# -- what must be recorded ------------------------------------------------------------------------------------

_CALL = re.compile(r"#\d+")


def base(series):
    return _CALL.sub("", series)


def graph_series(model, prefix=""):
    """`zoo.graph_series`'s series names (the statistics it expects are left out: its rule does not take the
    unknown lengths of variable-length sequences)."""
    from helpers import zoo

    expected_stats = zoo.expected_stats
    zoo.expected_stats = lambda *args: set()
    try:
        return zoo.graph_series(model, prefix)
    finally:
        zoo.expected_stats = expected_stats


def expected_series(model, sample=None):
    """`({series: statistics}, exact)`: what the Keras graph says must be recorded (`zoo.graph_series`).

    A functional or Sequential model gives its graph; a subclassed one (a GAN, a VAE, a distiller, a recommender)
    the graphs of the functional models it holds, each under its name, and the floating outputs of the other
    layers it holds that its `call` calls on `sample` (`held_layer_series`). `exact` is False when a custom
    `train_step` or `call` decides how many times the graph is called (the series are then compared without
    their call suffix `#k`)."""
    import keras
    from keras.src.models.functional import Functional

    if isinstance(model, (keras.Sequential, Functional)):
        return with_repeated_calls(model, graph_series(model)), type(model).train_step is keras.Model.train_step
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(graph_series(layer, layer.name + "/"))
    out.update(held_layer_series(model, sample))
    return out, False


def held_layer_series(model, sample):
    """`{series: {}}` for the floating outputs of the layers (not models) a subclassed `model` holds, read off
    one call of the model on `sample` (each held layer's `call` intercepted for that call only); empty when
    there is no sample, no such layer, or the model has no `call` (a GAN: only its `train_step` runs its
    models)."""
    import keras

    from tfprobe import metadata

    plain = [layer for layer in model.layers if not isinstance(layer, keras.Model)]
    if sample is None or not plain or type(model).call is keras.Model.call:
        return {}
    outputs = {}

    def intercept(layer):
        original = layer.call

        def call(*args, **kwargs):
            result = original(*args, **kwargs)
            outputs[layer.name] = keras.tree.flatten(result)
            return result

        object.__setattr__(layer, "call", call)

    for layer in plain:
        intercept(layer)
    try:
        model(sample)
    finally:
        for layer in plain:
            object.__delattr__(layer, "call")
    out = {}
    for name, tensors in outputs.items():
        for k, tensor in enumerate(tensors):
            if "float" in str(tensor.dtype):
                out[metadata.series_name(name, k, len(tensors), 0)] = {}
    return out


def first_batch(x, n=4):
    """The first `n` examples of a `fit` input (arrays, a list or dict of arrays, or a dataset of batches)."""
    import keras

    if hasattr(x, "take") and not isinstance(x, np.ndarray):  # a tf.data.Dataset
        element = next(iter(x.take(1)))
        inputs = element[0] if isinstance(element, tuple) else element
        return keras.tree.map_structure(lambda t: t[:n], inputs)
    return keras.tree.map_structure(lambda a: np.asarray(a)[:n], x)


def with_repeated_calls(model, series, prefix=""):
    """`series` plus the series of the later calls of nested models called several times in `model`'s graph
    (a Siamese tower): each of their series again with the call suffix `#k` (`zoo.graph_series` names the
    nested layers of the first call only)."""
    import keras

    if isinstance(model, keras.Sequential):
        model = model._functional
    out = dict(series)
    for depth in model._nodes_by_depth:
        for node in model._nodes_by_depth[depth]:
            operation = node.operation
            if not isinstance(operation, keras.Model):
                continue
            index = operation._inbound_nodes.index(node)
            call = sum(f"{id(operation)}_ib-{i}" in model._nodes for i in range(index))
            if call:
                inner = graph_series(operation, prefix + operation.name + "/")
                out.update({f"{name}#{call}": value for name, value in inner.items()})
    return out


def expected_windows(steps, log_freq):
    """The steps a `fit` of `steps` steps writes its windows at: every `log_freq`-th, and the last one."""
    return sorted(set(range(log_freq, steps + 1, log_freq)) | {steps})


def check_coverage(result, model, log_dir, sample=None):
    """Every expected series is recorded at every window, with a finite `std`; nothing else is recorded
    (`sample`: a few inputs of the model, for a subclassed one, see `expected_series`).

    A functional model is compared series by series; for a subclassed one, whose sub-models are called a number
    of times its `train_step` decides, the series are compared without their call suffix (`#1`)."""
    expected, exact = expected_series(model, sample)
    df = tfprobe.read_logdir(log_dir)
    result.expected = len(expected)
    recorded = set(df.layer)
    if exact:
        result.missing = sorted(set(expected) - recorded)
        result.extra = sorted(recorded - set(expected))
    else:
        wanted = {base(s) for s in expected}
        got = {base(s) for s in recorded}
        result.missing = sorted(s for s in expected if base(s) not in got)
        result.extra = sorted(s for s in recorded if base(s) not in wanted)
    steps = set(df.step)
    result.windows = sorted(int(s) for s in steps)
    std = df[df.stat == "std"]
    incomplete = []
    for series, group in std.groupby("layer"):
        if set(group.step) != steps or not np.isfinite(group.value).all():
            incomplete.append(series)
    result.incomplete = sorted(incomplete)


# -- the other readers ----------------------------------------------------------------------------------------


def report(log_dir):
    """`tfprobe report log_dir` in process: (exit code, output)."""
    from tfprobe import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["report", str(log_dir)])
    return code, out.getvalue()


def dashboard(log_dir):
    """Calls every query function of the dashboard over `log_dir` (as TensorBoard's data provider serves it)."""
    from tensorboard import context as tb_context
    from tensorboard.backend.event_processing import data_provider as mdp
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    from tensorboard_plugin_tfprobe import queries
    from tfprobe import metadata

    mux = pem.EventMultiplexer(
        tensor_size_guidance={metadata.PLUGIN_NAME: 0, metadata.HIST_PLUGIN_NAME: 0, metadata.GRAD_HIST_PLUGIN_NAME: 0}
    )
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    src = queries.Source(mdp.MultiplexerDataProvider(mux, str(log_dir)), tb_context.RequestContext(), "")
    runs = [r["name"] for r in queries.runs(src)["runs"]]
    assert runs, "the dashboard lists no run"
    run = runs[0]
    layers = queries.layers(src, [run])
    names = [layer["name"] for layer in layers["runs"][run]["layers"]]
    assert names, "the dashboard lists no layer"
    overview = queries.overview(src, run)
    assert overview, "the overview is empty"
    queries.scalars(src, [run], names[0], ["std", "mean"])
    queries.funnel(src, run)
    queries.pooling(src, run)
    health = queries.health(src, [run])
    assert "findings" in health
    return {"runs": runs, "layers": len(names), "health": health}


_PLAIN = {}


# -- one example x setting ------------------------------------------------------------------------------------


def run_example(module, setting, jit, tmp_path):
    """Trains the example without, then with `LayerProbe(**SETTINGS[setting])` and checks what the probe wrote."""
    from tfprobe.callback import LayerProbe

    name = module.__name__.rsplit(".", 1)[-1]
    result = Result(name, setting, jit)
    start = time.perf_counter()
    key = (name, jit)
    if key not in _PLAIN:  # the run without the probe, shared by the settings
        try:
            _PLAIN[key] = fit(seeded_build(module, jit))
        except Exception as error:  # noqa: BLE001
            _PLAIN[key] = error
    if isinstance(_PLAIN[key], Exception):
        result.error = f"without the probe: {type(_PLAIN[key]).__name__}: {_PLAIN[key]}"[:300]
        return result
    plain, plain_steps = _PLAIN[key]
    log_dir = tmp_path / f"{name}-{setting}-{'xla' if jit else 'graph'}"
    built = seeded_build(module, jit)
    result.layer_names = [layer.name for layer in built.model.layers]
    probe = LayerProbe(str(log_dir), **SETTINGS[setting])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            history, result.steps = fit(built, [probe])
            result.fit_ok = all(math.isfinite(v[-1]) for v in history.values()) and result.steps == plain_steps
            if not result.fit_ok:
                result.error = f"steps {result.steps} of {plain_steps}, history {history}"
            result.incident_counts = {k: v[-1] for k, v in history.items() if k.startswith("tfprobe_")}
            live = probe.incidents
            live = live[live.severity != "info"]
            result.incidents = [f"{i.severity} {i.root_kind} {i.root_layer}" for i in live.itertuples()]
        except Exception as error:  # noqa: BLE001 - the result says what failed
            result.error = describe(error)
    result.probe_warnings = [
        str(w.message)[:300] for w in caught if "tfprobe" in str(w.message).lower() or "tfprobe" in (w.filename or "")
    ]
    if result.fit_ok:
        result.expected_windows = expected_windows(result.steps, probe.log_freq)
        result.history_diff = history_difference(plain, history)
        if result.history_diff > HISTORY_RTOL:
            result.plain_diff = plain_reproducibility(module, jit, plain)
        try:
            check_coverage(result, built.model, log_dir, first_batch(built.x))
        except Exception as error:  # noqa: BLE001 - a broken oracle is a failed check, not a crash of the table
            result.missing = [f"(coverage oracle failed: {type(error).__name__}: {error})"]
        layers = tfprobe.read_layers(log_dir)
        findings = tfprobe.diagnose(tfprobe.read_logdir(log_dir), layers)
        result.findings = findings[findings.severity != "info"].reset_index(drop=True)
        try:
            result.report_code, _ = report(log_dir)
        except Exception as error:  # noqa: BLE001
            result.report_error = f"{type(error).__name__}: {error}"
        try:
            dashboard(log_dir)
        except Exception as error:  # noqa: BLE001
            result.dashboard_error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result


_AGAIN = {}


def plain_reproducibility(module, jit, plain):
    """The History difference between two runs of the example without the probe, from the same seeds (a step
    whose random ops XLA compiles draws other numbers at each compilation: keras-io's WGAN-GP under XLA)."""
    key = (module.__name__, jit)
    if key not in _AGAIN:
        try:
            _AGAIN[key] = history_difference(plain, fit(seeded_build(module, jit))[0])
        except Exception:  # noqa: BLE001 - it ran once already; a failure now says it is not reproducible
            _AGAIN[key] = math.inf
    return _AGAIN[key]


def describe(error):
    """One line for an exception: its type, first line, and the lines that say why (TensorFlow's graph errors
    put the reason on later lines)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    why = [line for line in lines[1:] if re.search(r"dimensions_size|tf2xla|Detected at node|Error|error", line)]
    return f"{type(error).__name__}: " + " // ".join(lines[:1] + why[:3])[:400]


def reference_data(module, built):
    if hasattr(module, "reference"):
        return module.reference(built)
    return (built.x[:32], built.y[:32]) if built.y is not None else built.x[:32]


@dataclasses.dataclass
class ReferenceResult:
    example: str
    outcome: str = ""  # "ran", "refused" (before any training step) or "failed"
    message: str = ""
    representation_rows: int = 0
    cam: str = ""  # image classifiers: the shape of `tfprobe.cam.grad_cam`'s maps, or its error
    callable: bool = True  # the model has a `call` (not only a `train_step` that runs the models it holds)


def run_reference(module, tmp_path):
    """`reference_data` (and `looks_examples` for image classifiers): runs, or is refused before training (an
    error, or one `tfprobe:` warning raised before the first step that says the data is not analysed)."""
    import keras

    from tfprobe.callback import LayerProbe

    name = module.__name__.rsplit(".", 1)[-1]
    out = ReferenceResult(name)
    built = seeded_build(module, False)
    out.callable = type(built.model).call is not keras.Model.call
    if getattr(module, "LOOKS", False):
        out.cam = grad_cam_shape(built.model, np.asarray(reference_data(module, built)[0][:4]))
    log_dir = tmp_path / f"{name}-reference"
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    caught = []  # (warning message, training steps run when it was raised)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: caught.append((str(message), len(steps)))
        try:
            probe = LayerProbe(
                str(log_dir),
                record_freq=10,
                reference_data=reference_data(module, built),
                looks_examples=4 if getattr(module, "LOOKS", False) else 0,
            )
            kwargs = {"epochs": 1, "verbose": 0, **built.fit}
            own = kwargs.pop("callbacks", [])
            built.model.fit(built.x, built.y, callbacks=[counter, *own, probe], **kwargs)
        except Exception as error:  # noqa: BLE001
            out.outcome = "refused" if not steps and isinstance(error, (ValueError, TypeError)) else "failed"
            out.message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            return out
    # a model that cannot honour `reference_data` / `looks_examples` (no `call`): one warning before the first
    # step, training goes on unchanged (non-strict `LayerProbe`)
    refused = [m for m, at in caught if at == 0 and m.startswith("tfprobe:") and "not analysed" in m]
    if refused:
        out.outcome, out.message = "refused", refused[0][:300]
        return out
    dropped = [m for m, _ in caught if "analysis" in m.lower()]
    if dropped:
        out.outcome, out.message = "failed", dropped[0][:300]
        return out
    from tfprobe.metadata import REPRESENTATION_STATS

    df = tfprobe.read_logdir(log_dir)
    out.representation_rows = int(df.stat.isin(REPRESENTATION_STATS).sum())
    out.outcome = "ran" if out.representation_rows else "failed"
    if not out.representation_rows:
        out.message = "no representation statistics written"
    return out


def grad_cam_shape(model, images):
    """`tfprobe.cam.grad_cam` on 4 images with the default layer: the maps' shape, or the error it raises."""
    from tfprobe import cam

    try:
        return str(tuple(np.asarray(cam.grad_cam(model, images)).shape))
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
