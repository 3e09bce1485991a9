"""Where a classifier looks, on demand: the public functions of `tfprobe.reference.saliency`.

>>> import keras, numpy as np, tfprobe.cam
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
>>> tfprobe.cam.grad_cam(model, np.ones((2, 8, 8, 1), "float32")).shape
(2, 8, 8)
"""

from tfprobe.reference.saliency import (
    DEFAULT_CHANNELS,
    FeatureMaps,
    cam,
    default_layer,
    feature_maps,
    grad_cam,
    grad_cam_plus_plus,
)

__all__ = ["grad_cam", "grad_cam_plus_plus", "cam", "feature_maps", "default_layer", "FeatureMaps", "DEFAULT_CHANNELS"]
