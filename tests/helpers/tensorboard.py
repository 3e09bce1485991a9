"""A real `tensorboard` server in a subprocess, plain HTTP against it, and where tests put artifacts
(screenshots, server logs).

    with tensorboard_server(logdir) as tb:
        tb.wait_until(lambda body: body["runs"])  # polls /data/plugin/tfprobe/runs
        status, body = http_get(tb.base + "/data/plugin/tfprobe/runs")
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def artifacts_dir():
    path = os.environ.get("TFPROBE_ARTIFACTS") or os.path.join(REPO, "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


class TensorBoardServer:
    """A real `tensorboard` subprocess on 127.0.0.1 (stopped by pid in `stop`)."""

    def __init__(self, logdir, *args, path_prefix=""):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}{path_prefix}"
        self.log_path = os.path.join(artifacts_dir(), f"tensorboard_{self.port}.log")
        cmd = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--reload_interval",
            "1",
            *args,
        ]
        if path_prefix:
            cmd += ["--path_prefix", path_prefix]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)

    def wait_until(self, predicate, route="/data/plugin/tfprobe/runs", timeout=90):
        """Polls `route` until `predicate(json)` is true; returns the json."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, body = http_get(self.base + route)
                last = json.loads(body)
                if status == 200 and predicate(last):
                    return last
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{route} did not become ready; last answer {str(last)[:300]}; see {self.log_path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def tensorboard_server(logdir, *args, path_prefix=""):
    server = TensorBoardServer(logdir, *args, path_prefix=path_prefix)
    try:
        yield server
    finally:
        server.stop()
