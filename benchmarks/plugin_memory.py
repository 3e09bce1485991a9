"""Peak memory of the dashboard's heaviest routes on a large run, through a real TensorBoard data provider.

Writes (once, cached under --logdir) a run of `--layers` series x `--windows` windows x the 13 activation
statistics (`benchmarks/dashboard.py`'s template writer: 500 x 10,000 x 13 = 65 M points, ~4 GB of
disk, the run of `tfprobe report`'s figure in RESULTS.md), starts TensorBoard's own data server
(`tensorboard_data_server`, the default fast loader, with the plugin's sampling defaults: every statistic
point kept) and waits until it has ingested every point. Then, in this process, it serves each route
through the plugin's WSGI app (`TfprobeLoader().load(...)`, as TensorBoard does) and reports per request:

  heap   the peak of Python allocations during the request above those before it (`tracemalloc`: the
         points TensorBoard's gRPC client decodes into Python objects, NumPy arrays, frames)
  rss    the peak resident memory of this process during the request above its RSS before it (Linux:
         `VmHWM` after writing 5 to /proc/self/clear_refs), which also counts gRPC's buffers

The data server runs in its own process and holds the points whatever the routes do; it is not counted.
Times are printed for information only (tracemalloc slows every allocation).

With PYTHONPATH=$PWD:$PWD/tensorboard_plugin (or the package installed):

    python benchmarks/plugin_memory.py                                   # 500 x 10,000 (writes ~4 GB once)
    python benchmarks/plugin_memory.py --layers 50 --windows 1000        # a quick look
    python benchmarks/plugin_memory.py --health-points 200 1000 10000    # /health at these `points`
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
import urllib.parse
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dashboard import write_run
from tensorboard.backend import application
from tensorboard.context import RequestContext
from tensorboard.data import provider as tb_provider
from tensorboard.data import server_ingester
from tensorboard.plugins import base_plugin
from tensorboard.util import grpc_util
from werkzeug.test import Client

from tensorboard_plugin_tfprobe import loader
from tfprobe import metadata

PREFIX = f"/data/plugin/{metadata.PLUGIN_NAME}"


def _kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(client, route, params):
    """`(status, heap peak MB, rss peak MB, seconds, body bytes)` of one request."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    rss0 = _kib("VmRSS")
    tracemalloc.reset_peak()
    heap0 = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    r = client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode(params, doseq=True)}")
    body = r.get_data()
    seconds = time.perf_counter() - t
    heap = tracemalloc.get_traced_memory()[1] - heap0
    rss = _kib("VmHWM") - rss0
    return r.status_code, heap / 1e6, rss / 1024, seconds, len(body)


def start_provider(logdir):
    ingester = server_ingester.SubprocessServerDataIngester(
        server_ingester.get_server_binary(),
        logdir,
        reload_interval=0,
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
        samples_per_plugin=loader.default_samples(),
    )
    ingester.start()
    return ingester.data_provider


def wait_ingested(provider, run, names, windows, timeout):
    """Until the first and the last series hold `windows` points of every statistic (the server loads in order)."""
    deadline = time.monotonic() + timeout
    tags = [metadata.tag_for(n, s) for n in (names[0], names[-1]) for s in metadata.ACTIVATION_STATS]
    while time.monotonic() < deadline:
        try:
            data = provider.read_scalars(
                RequestContext(),
                experiment_id="",
                plugin_name=metadata.PLUGIN_NAME,
                downsample=windows,
                run_tag_filter=tb_provider.RunTagFilter(runs=[run], tags=tags),
            )
            if all(len(data.get(run, {}).get(t, [])) == windows for t in tags):
                return
        except Exception:  # noqa: BLE001 - the server is still starting
            pass
        time.sleep(2)
    raise TimeoutError(f"the data server did not ingest {windows} windows in {timeout} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=500)
    p.add_argument("--windows", type=int, default=10_000)
    p.add_argument("--health-points", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "tfprobe_plugin_memory_bench"))
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()

    stats = list(metadata.ACTIVATION_STATS)
    logdir = os.path.join(args.logdir, f"l{args.layers}_w{args.windows}_s{len(stats)}")
    run = "big"
    names = [f"block_{i // 10:02d}/layer_{i:03d}" for i in range(args.layers)]
    if not os.path.isdir(os.path.join(logdir, run)):
        t = time.perf_counter()
        print(
            f"writing {args.layers} layers x {args.windows} windows x {len(stats)} stats to {logdir}", file=sys.stderr
        )
        write_run(os.path.join(logdir, run), args.layers, args.windows, stats)
        print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    t = time.perf_counter()
    provider = start_provider(logdir)
    wait_ingested(provider, run, names, args.windows, args.timeout)
    print(
        f"run: {args.layers} layers x {args.windows} windows x {len(stats)} statistics "
        f"({args.layers * args.windows * len(stats):,} points); data server ready in {time.perf_counter() - t:.0f} s"
    )
    plugin = loader.TfprobeLoader().load(
        base_plugin.TBContext(data_provider=provider, logdir=logdir, sampling_hints={})
    )
    client = Client(application.TensorBoardWSGI([plugin], data_provider=provider))
    layer = names[len(names) // 2]
    requests = [
        ("runs", {}),
        ("layers", {"run": run}),
        ("overview", {"run": run, "stat": "zero_fraction", "columns": 600}),
        ("overview", {"run": run, "stat": "zero_fraction", "columns": 2000}),
        ("overview", {"run": run, "stat": "zero_fraction", "columns": 2000, "agg": "max"}),
        ("scalars", {"run": run, "layer": layer, "stat": stats, "points": 10_000}),
        *[("health", {"run": run, "points": n}) for n in args.health_points],
        *[("incidents", {"run": run, "points": n}) for n in args.health_points[:1]],
    ]
    warnings.simplefilter("ignore", RuntimeWarning)  # diagnose: the synthetic run records no graph (`inputs`)
    tracemalloc.start()
    print(f"{'request':<72} {'status':>6} {'heap MB':>9} {'rss MB':>8} {'s':>6} {'body kB':>8}")
    for route, params in requests:
        status, heap, rss, seconds, size = measure(client, route, params)
        shown = "&".join(f"{k}={v if k != 'stat' or isinstance(v, str) else 'all 13'}" for k, v in params.items())
        print(
            f"{'/' + route + '?' + shown:<72} {status:>6} {heap:>9.1f} {rss:>8.1f} {seconds:>6.1f} {size / 1e3:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
