"""tfprobe: per-layer activation statistics for Keras training, in TensorBoard and pandas."""

from tfprobe.findings import diagnose
from tfprobe.findings.incidents import incidents
from tfprobe.logs.reader import read_cka, read_histograms, read_layers, read_logdir

__version__ = "0.1.0"


def __getattr__(name):
    # LayerProbe imports TensorFlow; keep `import tfprobe` (and the reader) TF-free.
    if name == "LayerProbe":
        from tfprobe.callback import LayerProbe

        return LayerProbe
    if name in ("cam", "looks"):  # `tfprobe.cam.grad_cam(...)` after a plain `import tfprobe`
        import importlib

        return importlib.import_module(f"tfprobe.{name}")
    raise AttributeError(f"module 'tfprobe' has no attribute {name!r}")


__all__ = ["LayerProbe", "read_logdir", "read_histograms", "read_layers", "read_cka", "diagnose", "incidents"]
