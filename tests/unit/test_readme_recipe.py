"""The README's image recipe is the example's Dockerfile, the one bake builds and the e2e tier
runs: one text, never a second copy drifting."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_the_readme_recipe_is_the_example_dockerfile() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- recipe: (\S+) -->\n```dockerfile\n(.*?)```\n", readme, re.S)
    assert match, "the README's recipe block is missing"
    path, text = match.groups()
    assert path == "examples/orders/Dockerfile"
    assert text == (ROOT / path).read_text()
