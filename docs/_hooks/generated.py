"""MkDocs hook: writes the pages' generated parts from the code as the site is built, so the site
cannot drift from it (retino/docs.py, fill_generated):

- `<!-- generated: configuration reference -->`: every group, option and key, from the schema
  (retino/config/schema.py) and conf/ — the same source as `python run.py --help`.
- `<!-- generated: key roles -->`: the key-roles table (retino/core/keys.py).
- `<!-- generated: ownership -->`: which module owns what (each module's docstring).
- `<!-- generated: demo folder -->`: where the demo set lands (retino/data/prepare/demo.py).

The parts are committed too (`python -m retino.docs` refreshes them; a test fails when
they are stale), so the repository's own page of the docs shows them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: import retino

from retino.docs import fill_generated  # noqa: E402


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return fill_generated(markdown)
