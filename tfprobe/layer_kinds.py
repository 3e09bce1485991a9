"""What Keras layer classes mean to tfprobe, by class name: one table, no TensorFlow.

The recorder (`tfprobe.recording.selection`: pooling, saturation bounds), the findings
(`tfprobe.findings`: normalisation, gradient routing), the reference analyses
(`tfprobe.reference.saliency`: pass-through layers, the global average pooling of a CAM head)
and the dashboard (`tensorboard_plugin_tfprobe.layout`: layer categories) all read it here. It
imports neither TensorFlow nor Keras, so the readers and the TensorBoard plugin can use it;
the recording side turns names into classes with `keras_classes`.

>>> CLASS_CATEGORY["MaxPooling2D"], CLASS_CATEGORY["BatchNormalization"], CLASS_CATEGORY["Add"]
('pooling', 'normalization', 'operation')
>>> BOUNDED_ACTIVATIONS["tanh"], BOUNDED_ACTIVATIONS["relu6"]
((-1.0, 1.0), (None, 6.0))
>>> [bool(NORMALIZATION_CLASS.search(c)) for c in ("LayerNormalization", "Rescaling", "Dense")]
[True, True, False]
>>> [bool(ROUTING_CLASS.search(c)) for c in ("GlobalMaxPooling2D", "Cropping2D", "AveragePooling2D")]
[True, True, False]
"""

from __future__ import annotations

import re

POOLING_CLASSES = (
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
)
"""Keras' pooling layers: the recorder measures their retention (series `kind == "pooling"`)."""

NORMALIZATION_CLASSES = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "RMSNormalization",
    "SpectralNormalization",
    "Normalization",
    "SyncBatchNormalization",
)
"""Keras' normalisation layers (the dashboard's `normalization` category)."""

CLASS_KINDS = {
    "normalization": NORMALIZATION_CLASSES,
    "shape": (  # padding, reshaping, identity-like and regularisation layers that pass values through
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "Reshape",
        "Flatten",
        "Permute",
        "RepeatVector",
        "Identity",
        "InputLayer",
        "Masking",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        "ActivityRegularization",
        "Rescaling",
        "Resizing",
        "CenterCrop",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "LayerScale",
        "StochasticDepth",
    ),
    "activation": ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"),
    "pooling": POOLING_CLASSES,
    "convolution": (
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    ),
    "dense": ("Dense", "EinsumDense", "Embedding"),
    "attention": ("MultiHeadAttention", "GroupedQueryAttention", "Attention", "AdditiveAttention"),
    "recurrent": (
        "LSTM",
        "GRU",
        "SimpleRNN",
        "RNN",
        "Bidirectional",
        "ConvLSTM1D",
        "ConvLSTM2D",
        "ConvLSTM3D",
        "LSTMCell",
        "GRUCell",
        "SimpleRNNCell",
    ),
    "operation": (  # merges and residual adds (layers, or the graph nodes of `x + y` in a Functional model)
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "Dot",
    ),
}
"""Kind -> Keras class names; each class in one kind (the dashboard's layer categories)."""

CLASS_CATEGORY = {cls: kind for kind, classes in CLASS_KINDS.items() for cls in classes}
"""Keras class name -> its kind in `CLASS_KINDS`."""

BOUNDED_ACTIVATIONS = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "relu6": (None, 6.0),
}
"""Activation function name -> the `(low, high)` range it bounds its output to (`low` None: one-sided).

The `Softmax` layer bounds to `(0, 1)` and `ReLU(max_value=m)` to `(None, m)` (see
`tfprobe.recording.selection.saturation_bounds`)."""

NORMALIZATION_CLASS = re.compile(r"(normali[sz]ation|norm|scale|scaling)$", re.IGNORECASE)
"""Layer classes whose job is to change the scale (BatchNormalization, LayerNormalization,
GroupNormalization, UnitNormalization, RMSNormalization, preprocessing Normalization, LayerScale,
Rescaling, ...): never judged `exploding_depth`/`vanishing_depth`."""

AFFINE_SCALING_CLASS = re.compile(
    r"^(Normalization|SpectralNormalization|.*Batch\w*Norm\w*)$|(scale|scaling)$", re.IGNORECASE
)
"""The `NORMALIZATION_CLASS` layers that map each example by an affine function of it (preprocessing
`Normalization`'s fixed mean and variance, BatchNormalization's statistics over the batch, a normalised
kernel, `Rescaling`, `LayerScale`): their output is constant only where their input is. The others
(LayerNormalization, GroupNormalization, UnitNormalization, RMSNormalization) normalise each example by its
own statistics, and can output one value per example whatever the input (`constant_output`)."""

ROUTING_CLASS = re.compile(r"MaxPool|GetItem|Slice|Cropping", re.IGNORECASE)
"""Layer classes that hand the gradient to a subset of their input (max pooling: one value per window,
slicing, cropping): a layer feeding only them has mostly zero gradients by design (`check_dead_gradient`)."""

PASS_THROUGH_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "ActivityRegularization",
)
"""Layers that pass their input through at inference: a CAM head may have them between its pooling and its
dense layer (`tfprobe.reference.saliency`)."""

GLOBAL_AVERAGE_POOLING_CLASSES = ("GlobalAveragePooling1D", "GlobalAveragePooling2D")
"""The global average poolings of a CAM head (`tfprobe.reference.saliency.cam_from`)."""


def keras_classes(names, layers) -> tuple:
    """The classes of module `layers` (`keras.layers`) named in `names`; names it lacks are left out.

    >>> import types
    >>> keras_classes(("Dense", "NoSuchLayer"), types.SimpleNamespace(Dense=int))
    (<class 'int'>,)
    """
    return tuple(getattr(layers, n) for n in names if hasattr(layers, n))
