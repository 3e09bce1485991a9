"""The work behind the dashboard's routes: plain functions over TensorBoard's data provider.

One module per view, as `static/views/` is: `runs` (the run picker), `overview`, `layer` (line charts and
histograms), `pooling` (pooling and the depth funnel), `health`, `incidents`, `looks`, `representations`;
`common` holds what they share (argument checks, `Source` and its reads, the series listing and run
lookup), `files` the plugin's own scan of the event files. Routes (`plugin.py`) call the names
re-exported here.

Every function takes a `Source` (data provider, request context, experiment
id) and plain arguments, and returns a JSON-ready dict. Errors are
`tensorboard.errors.NotFoundError` (404: unknown run, layer, or a statistic
that was not recorded) and `InvalidArgumentError` (400: a malformed argument or
a name that is not a tfprobe statistic); both messages name the culprit.

Downsampling for the view (documented in `http_api.md`):

* `overview` shows at most `columns` columns. With `agg="last"` (default)
  the provider is asked for `columns` windows per layer: every window when
  they fit, otherwise its deterministic uniform sample that always includes
  the newest window (the same windows for every layer), one column each.
  With `agg="max"`/`"min"` it reads up to `columns * OVERSAMPLE` windows and
  bins consecutive windows into the columns, showing the largest or smallest
  value of each bin (NaN ignored unless all are NaN) so that short spikes
  stay visible. In both cases a column is labelled with its last step.
* line charts (`scalars`, `pooling`) and `histogram` ask the provider for at
  most `points` points per series (its deterministic uniform sample that keeps
  the newest point), like TensorBoard's own scalar dashboard.

Memory: `overview` and `health`/`incidents`, the routes that read every layer, ask the provider for at most
`READ_BUDGET` points a read (`read_arrays`) and keep arrays, not the client's Python objects; `health`
builds the statistics frame `diagnose` reads series by series (`tfprobe.findings.series_stat_frame`), never
the long frame of every point (figures: `benchmarks/plugin_memory.py`, `benchmarks/RESULTS.md`).
"""

from tensorboard_plugin_tfprobe.queries.common import (
    ALL_POINTS,
    DEFAULT_COLUMNS,
    DEFAULT_POINTS,
    DEFAULT_STAT,
    HEALTH_POINTS,
    MAX_COLUMNS,
    MAX_INT_DIGITS,
    MAX_POINTS,
    OVERSAMPLE,
    READ_BUDGET,
    Source,
    _warned_series,
    check_stat,
    elements_per_example,
    list_series,
    logger,
    read_arrays,
    require,
    round_sig,
)
from tensorboard_plugin_tfprobe.queries.files import SCAN_TIME_BUDGET, file_warnings
from tensorboard_plugin_tfprobe.queries.health import diagnose_frames, health, threshold_args
from tensorboard_plugin_tfprobe.queries.incidents import incidents
from tensorboard_plugin_tfprobe.queries.layer import histogram, scalars
from tensorboard_plugin_tfprobe.queries.looks import looks, looks_image
from tensorboard_plugin_tfprobe.queries.overview import (
    AGGREGATIONS,
    FILTER_TIME_BUDGET,
    MAX_FILTER_LENGTH,
    bin_series,
    column_steps,
    layer_selector,
    overview,
)
from tensorboard_plugin_tfprobe.queries.pooling import funnel, pooling
from tensorboard_plugin_tfprobe.queries.representations import representations
from tensorboard_plugin_tfprobe.queries.runs import layers, runs

__all__ = [
    "AGGREGATIONS",
    "ALL_POINTS",
    "DEFAULT_COLUMNS",
    "DEFAULT_POINTS",
    "DEFAULT_STAT",
    "FILTER_TIME_BUDGET",
    "HEALTH_POINTS",
    "MAX_COLUMNS",
    "MAX_FILTER_LENGTH",
    "MAX_INT_DIGITS",
    "MAX_POINTS",
    "OVERSAMPLE",
    "READ_BUDGET",
    "SCAN_TIME_BUDGET",
    "Source",
    "bin_series",
    "check_stat",
    "column_steps",
    "diagnose_frames",
    "elements_per_example",
    "file_warnings",
    "funnel",
    "health",
    "histogram",
    "incidents",
    "layer_selector",
    "layers",
    "list_series",
    "logger",
    "looks",
    "looks_image",
    "overview",
    "pooling",
    "read_arrays",
    "representations",
    "require",
    "round_sig",
    "runs",
    "scalars",
    "threshold_args",
    "_warned_series",
]
