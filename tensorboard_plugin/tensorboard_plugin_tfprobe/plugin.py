"""The tfprobe TensorBoard plugin: thin route handlers over `queries` (see `http_api.md`)."""

from __future__ import annotations

import mimetypes
import os

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tensorboard_plugin_tfprobe import queries
from tfprobe import metadata

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def static_file(rel):
    """The absolute path of `rel` inside `static/`, or None if it escapes it or does not exist.

    >>> static_file("../plugin.py") is None, static_file("index.js") is not None
    (True, True)
    """
    if not rel or "\\" in rel or "\0" in rel:
        return None
    path = os.path.normpath(os.path.join(STATIC_DIR, rel))
    if not path.startswith(STATIC_DIR + os.sep) or not os.path.isfile(path):
        return None
    return path


def _json(request, body, code=200):
    return http_util.Respond(request, body, "application/json", code=code)


class TfprobePlugin(base_plugin.TBPlugin):
    """The "tfprobe" tab: reads tfprobe statistics and histograms through the data provider."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context):
        self._provider = context.data_provider
        self._logdir = getattr(context, "logdir", None) or ""

    def is_active(self):
        # Core marks the plugin active when the data provider lists our data plugin names.
        return False

    def data_plugin_names(self):
        return (metadata.PLUGIN_NAME, metadata.HIST_PLUGIN_NAME, metadata.GRAD_HIST_PLUGIN_NAME)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="tfprobe")

    def get_plugin_apps(self):
        return {
            "/static/*": self._serve_static,
            "/runs": self._route(lambda src, a: queries.runs(src)),
            "/layers": self._route(lambda src, a: queries.layers(src, a.getlist("run"))),
            "/overview": self._route(
                lambda src, a: queries.overview(
                    src,
                    a.get("run"),
                    a.get("stat") or queries.DEFAULT_STAT,
                    a.get("columns"),
                    a.get("agg") or "last",
                    a.get("filter"),
                    a.getlist("hide"),
                )
            ),
            "/scalars": self._route(
                lambda src, a: queries.scalars(
                    src, a.getlist("run"), a.get("layer"), a.getlist("stat"), a.get("points")
                )
            ),
            "/histogram": self._route(
                lambda src, a: queries.histogram(src, a.get("run"), a.get("layer"), a.get("columns"), a.get("quantity"))
            ),
            "/pooling": self._route(lambda src, a: queries.pooling(src, a.get("run"), a.get("points"))),
            "/funnel": self._route(lambda src, a: queries.funnel(src, a.get("run"), a.get("step"))),
            "/representations": self._route(lambda src, a: queries.representations(src, a.getlist("run"))),
            "/health": self._route(
                lambda src, a: queries.health(src, a.getlist("run"), a.get("points"), **queries.threshold_args(a))
            ),
            "/incidents": self._route(
                lambda src, a: queries.incidents(src, a.getlist("run"), a.get("points"), **queries.threshold_args(a))
            ),
            "/looks": self._route(lambda src, a: queries.looks(src, a.get("run"))),
            "/looks_image": self._image_route(
                lambda src, a: queries.looks_image(src, a.get("run"), a.get("tag"), a.get("step"))
            ),
        }

    def _source(self, request):
        return queries.Source(
            self._provider,
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
            self._logdir,
        )

    def _route(self, work):
        """Wraps `work(source, args) -> dict` as a JSON route; tensorboard errors become 400/404."""

        @wrappers.Request.application
        def app(request):
            return _json(request, work(self._source(request), request.args))

        return app

    def _image_route(self, work):
        """Wraps `work(source, args) -> PNG bytes` as an image route (errors as in `_route`)."""

        @wrappers.Request.application
        def app(request):
            return http_util.Respond(request, work(self._source(request), request.args), "image/png")

        return app

    @wrappers.Request.application
    def _serve_static(self, request):
        marker = "/static/"
        rel = request.path.split(marker, 1)[1] if marker in request.path else ""
        path = static_file(rel)
        if path is None:
            return http_util.Respond(request, f"Not found: {rel}", "text/plain", code=404)
        ext = os.path.splitext(path)[1]
        ctype = _CONTENT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            return http_util.Respond(request, f.read(), ctype)
