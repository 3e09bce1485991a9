"""Dashboard benchmark: the overview of a 500-layer x 10,000-window run, served by a real
`tensorboard` (default fast loader: the Rust data server), must take < 2 s with a
payload < 5 MB.

    python benchmarks/dashboard.py                       # 500 layers, 10,000 windows
    python benchmarks/dashboard.py --layers 50 --windows 1000 --stats zero_fraction

It writes the run once (cached under --logdir; the first window through
`tfprobe.logs.writer.WindowWriter`, the rest by updating a template `Summary`, since
the format is the same and building ~millions of protos one by one is slow),
starts `tensorboard --logdir ...` on 127.0.0.1, waits until every point is
ingested, then times `GET /data/plugin/tfprobe/overview` (wall time per request,
median of --repeat) and reports its payload size (raw JSON and gzip as sent),
also with filters applied on the server (`filter=`, `hide=`), and `/health`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
from tensorboard.compat.proto import event_pb2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from helpers import synthetic
from helpers.tensorboard import tensorboard_server

from tfprobe import metadata
from tfprobe.logs.events import EventFileWriter

DEFAULT_STATS = ("zero_fraction", "mean", "std", "dead_unit_fraction")


def write_run(path, layers, windows, stats):
    os.makedirs(path, exist_ok=True)
    names = [f"block_{i // 10:02d}/layer_{i:03d}" for i in range(layers)]
    infos = {n: synthetic.info_for(i, n, "Conv2D", shape=[None, 32, 32, 16]) for i, n in enumerate(names)}
    rng = np.random.default_rng(0)
    synthetic.write_windows(path, infos, [(1, {n: {s: 0.5 for s in stats} for n in names}, {})])
    # template for the remaining windows: same tags and tensors, no metadata
    template = event_pb2.Event()
    for n in names:
        for s in stats:
            v = template.summary.value.add(tag=metadata.tag_for(n, s))
            v.metadata.plugin_data.plugin_name = metadata.PLUGIN_NAME
            v.metadata.data_class = metadata.DATA_CLASS_SCALAR
            v.tensor.dtype = 1  # DT_FLOAT
            v.tensor.float_val.append(0.0)
    out = EventFileWriter(path)
    values = template.summary.value
    base = np.linspace(0.05, 0.95, layers)
    for step in range(2, windows + 1):
        noise = rng.random(layers * len(stats)) * 0.05
        k = 0
        for i in range(layers):
            for _ in stats:
                values[k].tensor.float_val[0] = float(base[i] + noise[k])
                k += 1
        template.step = step
        template.wall_time = 1e9 + step
        out.write(template)
        if step % 1000 == 0:
            out.flush()
            print(f"  wrote {step} windows", file=sys.stderr)
    out.close()
    return names


def get(url, gz=False):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gz else {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=500)
    p.add_argument("--windows", type=int, default=10_000)
    p.add_argument("--stats", nargs="+", default=list(DEFAULT_STATS))
    p.add_argument("--columns", type=int, nargs="+", default=[500, 1000])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "tfprobe_dashboard_bench"))
    p.add_argument("--tensorboard-args", nargs="*", default=[])
    args = p.parse_args()

    logdir = os.path.join(args.logdir, f"l{args.layers}_w{args.windows}_s{len(args.stats)}")
    run = "big"
    names = [f"block_{i // 10:02d}/layer_{i:03d}" for i in range(args.layers)]
    if not os.path.isdir(os.path.join(logdir, run)):
        t = time.perf_counter()
        print(
            f"writing {args.layers} layers x {args.windows} windows x {len(args.stats)} stats to {logdir}",
            file=sys.stderr,
        )
        write_run(os.path.join(logdir, run), args.layers, args.windows, args.stats)
        print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    route = f"/data/plugin/{metadata.PLUGIN_NAME}"
    stat = args.stats[0]
    with tensorboard_server(logdir, *args.tensorboard_args) as tb:
        base = tb.base + route
        t0 = time.perf_counter()
        for layer in (names[-1], names[0]):  # every point of the last and the first series ingested
            tb.wait_until(
                lambda body: len(body.get("series", {}).get(stat, {}).get(run, [])) == args.windows,
                f"{route}/scalars?run={run}&layer={urllib.parse.quote(layer)}&stat={stat}&points={args.windows}",
                timeout=1800,
            )
        print(f"ingested every point in {time.perf_counter() - t0:.0f} s (including tensorboard start-up)")
        print(
            f"run: {args.layers} layers x {args.windows} windows x {len(args.stats)} stats "
            f"({args.layers * args.windows * len(args.stats):,} points); loader args: {args.tensorboard_args or 'default'}"
        )
        for columns in args.columns:
            url = f"{base}/overview?run={run}&stat={args.stats[0]}&columns={columns}"
            get(url)  # warm-up
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                body = get(url)
                times.append(time.perf_counter() - t)
            zipped = get(url, gz=True)
            data = json.loads(body)
            assert len(data["layers"]) == args.layers and data["steps"][-1] == args.windows
            print(
                f"overview columns={columns}: median {statistics.median(times):.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}); payload {len(body) / 1e6:.2f} MB raw, "
                f"{len(zipped) / 1e6:.2f} MB gzip; {len(data['layers'])} rows x {len(data['steps'])} columns"
            )
        # the same overview with filters applied on the server (`filter`/`hide`): 300 of the 500 layers
        url = f"{base}/overview?run={run}&stat={args.stats[0]}&columns={args.columns[0]}&hide=normalization&filter=block_%5B0-2%5D"
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            body = get(url)
            times.append(time.perf_counter() - t)
        print(
            f"overview filtered (filter=block_[0-2], hide=normalization): median {statistics.median(times):.2f} s; "
            f"payload {len(body) / 1e6:.2f} MB raw; {len(json.loads(body)['layers'])} rows"
        )
        url = f"{base}/health?run={run}"
        t = time.perf_counter()
        body = get(url)
        print(
            f"health (diagnose on up to 200 points/series): {time.perf_counter() - t:.2f} s, {len(body) / 1e3:.0f} kB"
        )


if __name__ == "__main__":
    main()
