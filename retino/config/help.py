"""`python run.py --help`, written from the config itself: every config group with its options
(each option's first comment sentence in conf/<group>/<option>.yaml) and every top-level key with
its type, default and meaning (the comment beside the field in the schema, retino/config/schema.py).
One source for each: the help cannot drift from what the code reads. The docs' configuration
reference and key-roles table are written from here too (retino/docs.py puts them in the pages).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from pathlib import Path

from retino import PROJECT_ROOT
from retino.core.keys import NOT_IDENTITY, ROLES

CONF_DIR = PROJECT_ROOT / "conf"
GROUPS = ("model", "head", "pretrain", "data", "augmentation", "resolution", "freeze", "quality",
          "optimizer", "schedule", "preset")


# What a group's option lines share, said once under the group in --help and the reference.
GROUP_NOTES = {"model": "Parameters and FLOPs with retino's five-grade head; a multiply-add "
                        "counted as 2 FLOPs (retino/models/cost.py; each run logs its cost_*)."}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment on that line (without '#')."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens
            if tok.type == tokenize.COMMENT}


def field_docs(cls: type) -> dict[str, str]:
    """A dataclass's field -> its comment: the one beside it, else the lines just above it."""
    source = inspect.getsource(cls)
    comments, lines = _comments(source), source.splitlines()
    docs = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        row, above = node.lineno, []
        while row - len(above) - 1 >= 1 and lines[row - len(above) - 2].strip().startswith("#"):
            above.insert(0, comments[row - len(above) - 1])
        text = " ".join([*above, comments.get(row, "")]).strip()
        docs[node.target.id] = text
    return docs


def _type_name(annotation: object) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        return f"{_type_name(next(a for a in args if a is not type(None)))} or null"
    if annotation is typing.Any:
        return "value"
    return getattr(annotation, "__name__", str(annotation))


def top_level_keys(schema: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every plain (not group) key of the schema."""
    hints, docs, defaults = typing.get_type_hints(schema), field_docs(schema), schema()
    rows = []
    for field in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[field.name]):
            continue
        default = getattr(defaults, field.name)
        shown = "null" if default is None else str(default).lower() \
            if isinstance(default, bool) else str(default)
        rows.append((field.name, _type_name(hints[field.name]), shown, docs[field.name]))
    return rows


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[tuple[str, str]]]:
    """group -> [(option, its first comment sentence)], from the YAML files."""
    options = {}
    for group in GROUPS:
        files = sorted((conf_dir / group).glob("*.yaml"))
        options[group] = [(path.stem, _first_comment(path)) for path in files]
    return options


def _first_comment(path: Path) -> str:
    """The option file's first comment, whole: its lines up to the one that ends a sentence
    (a description cut at the end of its first line read as a broken sentence), never an
    example command indented below it."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#") or text.startswith("# @package"):
            if words:
                break
            continue
        if words and text.startswith("#  "):  # an indented example, not the description
            break
        words.append(text.lstrip("#").strip())
        if words[-1].endswith((".", ".)", ":")):
            break
    return " ".join(words)


def help_text(schema: type) -> str:
    lines = ["retino: diabetic-retinopathy grading experiments (PyTorch, Hydra, MLflow).", "",
             "  python run.py [group=option ...] [key=value ...]       one run",
             "  python run.py -m key=a,b [group=x,y ...]               a study (every combination)",
             "  python run.py -m -cd sweeps -cn <study>                a study kept in sweeps/",
             "", "== Config groups (group=option) =="]
    for group, options in group_options().items():
        prefix = "+" if group == "preset" else ""
        lines.append(f"{prefix}{group}:")
        for name, doc in options:
            lines += textwrap.wrap(f"{name:<22} {doc}", width=96, initial_indent="    ",
                                   subsequent_indent=" " * 27) or [f"    {name}"]
        if group in GROUP_NOTES:
            lines += textwrap.wrap(GROUP_NOTES[group], width=96, initial_indent="    ",
                                   subsequent_indent="    ")
    lines += ["", "== Keys (key=value) =="]
    for key, kind, default, doc in top_level_keys(schema):
        role = " [how it runs: not part of a run's identity]" if key in NOT_IDENTITY else ""
        lines += textwrap.wrap(f"{key} ({kind}, default {default}): {doc}{role}", width=100,
                               initial_indent="  ", subsequent_indent="      ")
    lines += ["", "A group's own keys: group.key=value (e.g. data.root=/data/dr lr=0.01). "
              "`python run.py --cfg job` prints the whole composed config; "
              "Tab completion of groups and keys in bash: "
              "eval \"$(python run.py --shell-completion install=bash)\".", "",
              "Powered by Hydra (https://hydra.cc); Hydra's own flags: --hydra-help."]
    # Hydra fills its help template with string.Template (where "$$" is a "$") and OmegaConf
    # (which reads only "${") before printing.
    return "\n".join(lines).replace("$", "$$")


# --- The docs' generated parts: the configuration reference, the key-roles table ---------------

def group_keys(schema: type) -> dict[str, list[tuple[str, str, str, str]]]:
    """group -> (group.key, type, default, meaning) of each key an option of it may set."""
    hints = typing.get_type_hints(schema)
    groups = {}
    for field in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[field.name]):
            rows = top_level_keys(hints[field.name])
            groups[field.name] = [(f"{field.name}.{key}", *rest) for key, *rest in rows]
    return groups


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def reference_markdown(schema: type) -> str:
    """Every config group with its options and keys, and every top-level key: markdown."""
    lines = ["## Config groups", "", "Choose an option with `group=option` "
             "(`python run.py model=resnet50`); a group's keys are set with `group.key=value`.", ""]
    keys = group_keys(schema)
    for group, options in group_options().items():
        prefix = "+" if group == "preset" else ""
        lines += [f"### {group}", "", "| option | what it is |", "|---|---|"]
        lines += [f"| `{prefix}{group}={name}` | {_cell(doc)} |" for name, doc in options]
        lines += ["", GROUP_NOTES[group]] if group in GROUP_NOTES else []
        if keys.get(group):
            lines += ["", "| key | type | default | meaning |", "|---|---|---|---|"]
            lines += [f"| `{key}` | {kind} | `{default}` | {_cell(doc)} |"
                      for key, kind, default, doc in keys[group]]
        lines.append("")
    lines += ["## Top-level keys", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {kind} | `{default}` | {_cell(doc)} |"
              for key, kind, default, doc in top_level_keys(schema)]
    return "\n".join(lines) + "\n"


def key_roles_markdown() -> str:
    """The key-roles table (retino/core/keys.py) as markdown; unlisted keys have the default."""
    yes = {True: "yes", False: "**no**"}
    lines = ["| key | identity | study axis | in the run name | retino.evaluate may change it "
             "| why |", "|---|---|---|---|---|---|"]
    for key, role in sorted(ROLES.items()):
        identity = "as resolved" if role.resolved else yes[role.identity]
        lines.append(f"| `{key}` | {identity} | {yes[role.axis]} | {yes[role.in_name]} "
                     f"| {yes[role.evaluation]} | {_cell(role.why)} |")
    lines += ["", "Every other key is part of a run's identity and may be a study's axis."]
    return "\n".join(lines) + "\n"
