"""The README stays short and its links lead somewhere: every relative link and image is a file of the repository
(the docs site's own links are checked by `mkdocs build --strict` in scripts/test.sh), and the two commands that
.ci/run and newcomers rely on are there verbatim."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_links_resolve():
    targets = re.findall(r"\]\(([^)\s]+)\)", _readme())
    local = [t for t in targets if "://" not in t and not t.startswith("#")]
    assert local, "no relative link found: the pattern is wrong"
    missing = [t for t in local if not os.path.exists(os.path.join(REPO, t.split("#", 1)[0]))]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_short_and_has_the_two_commands():
    text = _readme()
    assert len(text.splitlines()) <= 200
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
