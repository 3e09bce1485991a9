"""The documented public names: each importable where the docs say, and each with its API reference page.

A name removed or moved, a `LayerProbe` argument renamed, added or given another default without the docs
(docs/getting-started.md, "`LayerProbe` arguments"), or a public name without a page under docs/reference/
fails here.
"""

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

import tfprobe
import tfprobe.cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")

# Every name the documentation presents as public, by module.
PUBLIC = {
    "tfprobe": [
        "LayerProbe",
        "read_logdir",
        "read_histograms",
        "read_layers",
        "read_cka",
        "diagnose",
        "incidents",
        "cam",
        "looks",
        "__version__",
    ],
    "tfprobe.cam": [
        "grad_cam",
        "grad_cam_plus_plus",
        "cam",
        "feature_maps",
        "default_layer",
        "FeatureMaps",
        "DEFAULT_CHANNELS",
    ],
    "tfprobe.looks": ["LooksAnalysis"],
    "tfprobe.cli": ["main", "build_parser"],
    "tfprobe.findings": ["diagnose", "CHECKS", "context", "SEVERITIES", "TINY_SHARE", "ROUTING_CLASS"],
    "tfprobe.findings.incidents": ["incidents", "INCIDENT_COLUMNS", "CAUSES", "PRECEDENCE"],
    "tfprobe.logs.reader": ["read", "read_logdir", "read_histograms", "read_layers", "read_cka"],
    "tfprobe.metadata": [
        "histogram_buckets",
        "FORMAT_VERSION",
        "ACTIVATION_STATS",
        "GRADIENT_STATS",
        "POOLING_STATS",
        "REPRESENTATION_STATS",
        "STAT_DESCRIPTIONS",
    ],
    "tfprobe.reference": ["ReferenceData"],
    "tfprobe.reference.measures": [
        "effective_rank",
        "stable_rank",
        "linear_cka",
        "cka_matrix",
        "probe_accuracy",
        "label_mutual_information",
        "linear_probe",
        "cka_noise_floor",
    ],
    "tfprobe.reference.representations": ["MEMORY_BUDGET"],
}


def test_tfprobe_all_is_the_documented_top_level():
    assert sorted(tfprobe.__all__) == sorted(
        ["LayerProbe", "read_logdir", "read_histograms", "read_layers", "read_cka", "diagnose", "incidents"]
    )


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_documented_names_import(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks documented names {missing}"


def test_public_aliases_are_the_implementations():
    from tfprobe.callback import LayerProbe
    from tfprobe.reference import looks, saliency

    assert tfprobe.LayerProbe is LayerProbe
    assert tfprobe.looks.LooksAnalysis is looks.LooksAnalysis
    assert tfprobe.cam.grad_cam is saliency.grad_cam
    assert sorted(tfprobe.cam.__all__) == sorted(PUBLIC["tfprobe.cam"])
    with pytest.raises(AttributeError, match="no_such_name"):
        tfprobe.no_such_name  # noqa: B018


def test_import_tfprobe_does_not_import_tensorflow():
    code = (
        "import sys, tfprobe; tfprobe.read_logdir; tfprobe.diagnose; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"], out


def _reference_targets():
    """The `::: dotted.name` targets of the API reference pages."""
    targets = {}
    for name in sorted(os.listdir(os.path.join(DOCS, "reference"))):
        with open(os.path.join(DOCS, "reference", name), encoding="utf-8") as f:
            for line in f:
                if line.startswith("::: "):
                    targets[line[4:].strip()] = name
    return targets


def test_every_public_name_has_a_reference_page():
    targets = _reference_targets()
    wanted = {
        "LayerProbe": "tfprobe.callback.LayerProbe",
        "read_logdir": "tfprobe.read_logdir",
        "read_histograms": "tfprobe.read_histograms",
        "read_layers": "tfprobe.read_layers",
        "read_cka": "tfprobe.read_cka",
        "diagnose": "tfprobe.diagnose",
        "incidents": "tfprobe.incidents",
    }
    assert sorted(wanted) == sorted(tfprobe.__all__)
    wanted.update(cam="tfprobe.cam", looks="tfprobe.looks.LooksAnalysis")
    missing = {name: target for name, target in wanted.items() if target not in targets}
    assert not missing, f"no docs/reference page with `::: target` for {missing}"
    for target in targets:  # and each target imports (mkdocs build --strict checks it statically too)
        module, _, attr = target.rpartition(".")
        try:
            obj = importlib.import_module(target)
        except ModuleNotFoundError:
            obj = getattr(importlib.import_module(module), attr)
        assert obj is not None


def _argument_table():
    """{argument: default literal} from the `LayerProbe` arguments table of docs/getting-started.md."""
    with open(os.path.join(DOCS, "getting-started.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## `LayerProbe` arguments", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        defaults = ["(required)"] if cells[1] == "(required)" else re.findall(r"`([^`]+)`", cells[1])
        assert len(names) == len(defaults), f"argument row {cells[0]!r}: {len(names)} names, {len(defaults)} defaults"
        table.update(zip(names, defaults))
    return table


def test_layerprobe_arguments_are_the_documented_ones():
    documented = _argument_table()
    params = inspect.signature(tfprobe.LayerProbe.__init__).parameters
    actual = {name: p.default for name, p in params.items() if name != "self"}
    assert sorted(documented) == sorted(actual), (
        "docs/getting-started.md's `LayerProbe` arguments table and the signature differ: "
        f"only documented {sorted(set(documented) - set(actual))}, undocumented {sorted(set(actual) - set(documented))}"
    )
    for name, literal in documented.items():
        default = actual[name]
        if literal == "(required)":
            assert default is inspect.Parameter.empty, name
        else:
            assert ast.literal_eval(literal) == default, f"{name}: documented default {literal}, actual {default!r}"


def test_cli_reference_names_every_option():
    parser = tfprobe.cli.build_parser()
    with open(os.path.join(DOCS, "reference", "cli.md"), encoding="utf-8") as f:
        page = f.read()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command, sub in subparsers.choices.items():
        assert f"`{command} " in page, f"docs/reference/cli.md does not describe `tfprobe {command}`"
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in page, f"docs/reference/cli.md does not describe `{command} {option}`"
