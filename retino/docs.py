"""`python -m retino.docs`: writes the docs' generated parts afresh from the code, so a page
cannot drift from what it describes: the configuration reference and the key roles (from the
schema and conf/, as `python run.py --help`), which module owns what (each module's docstring),
and the demo data's folder (its generator's version and the schema's defaults).

A part sits between `<!-- generated: NAME -->` and `<!-- end of generated: NAME -->`. The parts
are committed, so the repository's web page shows them; the docs build (docs/_hooks) writes them
again and a test fails when the committed ones are stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

from retino import PROJECT_ROOT
from retino.config.help import key_roles_markdown, reference_markdown
from retino.config.schema import Config, DataConfig
from retino.core.files import atomic_write_text
from retino.data.load.loaders import DEFAULT_DEMO_CACHE
from retino.data.prepare.demo import demo_folder_name

DOCS_DIR = PROJECT_ROOT / "docs"
STAGES = ("core", "config", "data", "models", "evaluation", "training", "tracking", "serving",
          "jobs", "studies")  # bottom to top: pyproject.toml's import-linter layers, reversed


def _first_sentence(path: Path) -> str:
    """A module's docstring up to its first sentence's end (its first paragraph at most),
    read from the file (nothing imported)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    for end in (". ", ".) "):
        if end in paragraph:
            return paragraph[: paragraph.index(end) + len(end) - 1]
    return paragraph


def ownership_markdown(package: Path = PROJECT_ROOT / "retino") -> str:
    """Which package owns what: each stage's own words (its __init__'s first sentence) and each
    module's (its docstring's), the commands at the top first, then the stages bottom up."""
    lines = ["### `retino` (top): the commands, `python -m retino.<name>`", ""]
    lines += [f"- `{path.name}`: {_first_sentence(path)}" for path in sorted(package.glob("*.py"))
              if path.name != "__init__.py"]
    for stage in STAGES:
        folder = package / stage
        lines += ["", f"### `{stage}`", "", _first_sentence(folder / "__init__.py"), ""]
        lines += [f"- `{_module_name(path, folder)}`: {_first_sentence(path)}"
                  for path in sorted(folder.rglob("*.py")) if path != folder / "__init__.py"]
    return "\n".join(lines) + "\n"


def _module_name(path: Path, stage: Path) -> str:
    """A module as the stage's folder names it: `split.py`, `prepare/cache.py`; a subpackage's
    __init__ as the subpackage, `prepare/`."""
    name = path.relative_to(stage).as_posix()
    return name.removesuffix("__init__.py") if path.name == "__init__.py" else name


def demo_folder_markdown() -> str:
    """Where `python run.py` generates the demo set with the default settings: the folder that
    locate_dataset makes, relative to the project."""
    data = DataConfig()
    folder = DEFAULT_DEMO_CACHE / demo_folder_name(data.train_size, data.test_size,
                                                   data.image_size, data.seed)
    return f"`{folder.relative_to(PROJECT_ROOT).as_posix()}/`\n"


GENERATED = {"configuration reference": lambda: reference_markdown(Config),
             "key roles": key_roles_markdown,
             "ownership": ownership_markdown,
             "demo folder": demo_folder_markdown}


def fill_generated(markdown: str) -> str:
    """The page with each generated part written afresh from the code (its end marker added
    when missing)."""
    for name, generate in GENERATED.items():
        start, end = f"<!-- generated: {name} -->", f"<!-- end of generated: {name} -->"
        if start not in markdown:
            continue
        before, rest = markdown.split(start, 1)
        after = rest.split(end, 1)[1] if end in rest else rest
        markdown = f"{before}{start}\n{generate()}{end}{after}"
    return markdown


def write_generated_docs(docs: Path = DOCS_DIR) -> list[Path]:
    """Every docs page whose generated parts were stale, rewritten; returns them."""
    written = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        if (fresh := fill_generated(text)) != text:
            written.append(atomic_write_text(page, fresh))
    return written


if __name__ == "__main__":
    for page in write_generated_docs():
        print(f"rewrote {page.relative_to(PROJECT_ROOT)}")
