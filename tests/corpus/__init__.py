"""A corpus of official Keras examples (keras-team/keras-io, `examples/**.py`), their model-building and `compile`
code kept (widths shrunk), their data synthetic with the same structure and a learnable signal.

`harness.py` runs them under tfprobe; `tests/examples/test_corpus.py` is the test (`python -m pytest -m slow
tests/examples/test_corpus.py` for the whole corpus); `python -m corpus.table` (from `tests/`) prints the results table.
"""
