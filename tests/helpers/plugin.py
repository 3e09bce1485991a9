"""The tfprobe plugin in process: a data provider over real event files and werkzeug's test client over
TensorBoard's WSGI app with the plugin loaded (no server, no browser)."""

from __future__ import annotations

import urllib.parse

from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as mdp
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from tensorboard_plugin_tfprobe import loader as loader_module
from tensorboard_plugin_tfprobe.plugin import TfprobePlugin
from tfprobe import metadata

PREFIX = f"/data/plugin/{metadata.PLUGIN_NAME}"


def make_provider(logdir):
    """TensorBoard's Python data provider over `logdir`, every tfprobe value kept (no sampling)."""
    mux = pem.EventMultiplexer(
        tensor_size_guidance={metadata.PLUGIN_NAME: 0, metadata.HIST_PLUGIN_NAME: 0, metadata.GRAD_HIST_PLUGIN_NAME: 0}
    )
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mdp.MultiplexerDataProvider(mux, str(logdir))


def make_client(provider, path_prefix=""):
    """werkzeug's test client over TensorBoard's WSGI app serving the plugin as its loader loads it."""
    ctx = base_plugin.TBContext(data_provider=provider, sampling_hints={})
    plugin = loader_module.TfprobeLoader().load(ctx)
    assert isinstance(plugin, TfprobePlugin)
    return Client(application.TensorBoardWSGI([plugin], data_provider=provider, path_prefix=path_prefix))


def get_json(client, route, **params):
    """The JSON answer of the plugin's `route` (asserting status 200 and a JSON content type)."""
    query = urllib.parse.urlencode(params, doseq=True)
    r = client.get(f"{PREFIX}/{route}?{query}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("application/json")
    return r.get_json()
