"""MkDocs hook: fills the pages' generated parts from the code, so they cannot drift from it.

- `<!-- generated: configuration reference -->`: every group, option and key, from the schema
  (retino/config/schema.py) and conf/ — the same source as `python run.py --help`.
- `<!-- generated: key roles -->`: the key-roles table (retino/core/keys.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: import retino

from retino.config.help import key_roles_markdown, reference_markdown  # noqa: E402
from retino.config.schema import Config  # noqa: E402

MARKERS = {
    "<!-- generated: configuration reference -->": lambda: reference_markdown(Config),
    "<!-- generated: key roles -->": key_roles_markdown,
}


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    for marker, generate in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
