"""The docs: the configuration reference is generated from the schema and covers every key and
group a run can have; the README stays a front door."""

from __future__ import annotations

from retino import PROJECT_ROOT
from retino.config.help import GROUPS, key_roles_markdown, reference_markdown
from retino.config.params import flatten_config
from retino.config.schema import Config
from retino.core.keys import ROLES
from tests.conftest import compose_config


def every_config_key() -> set[str]:
    """Every leaf of the composed config, whichever options are chosen."""
    keys: set[str] = set()
    for overrides in ([], ["data=kaggle", "data.root=/tmp"], ["pretrain=cifar10"],
                      ["optimizer=sgd", "schedule=step"]):
        keys |= set(flatten_config(compose_config(overrides)))
    return keys


def test_the_reference_names_every_config_key_and_every_group():
    reference = reference_markdown(Config)
    missing = sorted(key for key in every_config_key() if f"`{key}`" not in reference)
    assert not missing, f"keys missing from the generated reference: {missing}"
    assert all(f"### {group}" in reference for group in GROUPS)
    assert "`model=resnet50`" in reference and "`augmentation=strong`" in reference


def test_the_key_roles_page_lists_every_role():
    table = key_roles_markdown()
    assert all(f"`{key}`" in table for key in ROLES)
    assert "| `resume` | **no** | **no** |" in table  # never identity, never an axis


def test_the_readme_is_a_front_door():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for command in ("python run.py", "python -m pytest", "mlflow ui", "-cd sweeps"):
        assert command in readme


def test_the_committed_generated_parts_are_the_codes():
    """The configuration reference and the key-roles table are committed (a reader of the
    repository's web page sees them, not a marker) and equal what the code generates now."""
    from retino.docs import DOCS_DIR, fill_generated

    pages = sorted(DOCS_DIR.rglob("*.md"))
    stale = [page.name for page in pages if fill_generated(page.read_text()) != page.read_text()]
    assert not stale, f"run python -m retino.docs: stale generated parts in {stale}"
    reference = (DOCS_DIR / "reference" / "configuration.md").read_text()
    assert "| `copies_across_splits` | str | `refuse` |" in reference


def test_every_option_is_described_in_whole_sentences():
    """--help and the reference cut option descriptions at their first line ('ordinal: ...
    give the grade')."""
    from retino.config.help import group_options, help_text

    cut = [f"{group}={name}" for group, options in group_options().items()
           for name, doc in options if not doc.endswith((".", ".)", ":"))]
    assert not cut, f"descriptions that do not end a sentence: {cut}"
    assert "give the grade probabilities (retino/models/heads.py)." in \
        " ".join(help_text(Config).split())
