"""tfprobe: per-layer activation statistics for Keras training, in TensorBoard and pandas."""

from tfprobe.diagnose import diagnose
from tfprobe.reader import read_cka, read_histograms, read_layers, read_logdir

__version__ = "0.1.0"


def __getattr__(name):
    # LayerProbe imports TensorFlow; keep `import tfprobe` (and the reader) TF-free.
    if name == "LayerProbe":
        from tfprobe.callback import LayerProbe

        return LayerProbe
    raise AttributeError(f"module 'tfprobe' has no attribute {name!r}")


__all__ = ["LayerProbe", "read_logdir", "read_histograms", "read_layers", "read_cka", "diagnose"]
