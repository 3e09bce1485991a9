"""Where the model looks during training: the public name of `tfprobe.reference.looks.LooksAnalysis`.

>>> from tfprobe.looks import LooksAnalysis
>>> LooksAnalysis.__module__
'tfprobe.reference.looks'
"""

from tfprobe.reference.looks import LooksAnalysis

__all__ = ["LooksAnalysis"]
