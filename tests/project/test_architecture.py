"""The house by stage: retino/ is ten stage subpackages whose imports only go down (lint-imports
checks the layer order in CI; these tests check what it cannot say: no cycle at all, and the
shape a newcomer sees)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import grimp
import pytest

from retino import PROJECT_ROOT
from retino.config.params import params_to_log
from retino.core.keys import GPU_PARAM, ROLES
from tests.conftest import compose_config

STAGES = ("core", "config", "data", "models", "evaluation", "training", "tracking", "serving",
          "jobs", "studies")


def import_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (module -> modules it imports), as a path; [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for imported in sorted(edges.get(module, ())):
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        state[module] = 2
        path.pop()
        return []
    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) == []


def test_no_import_cycle_among_retinos_modules_function_level_imports_included():
    graph = grimp.build_graph("retino")  # every import statement, inside functions too
    edges = {module: {imported for imported in graph.find_modules_directly_imported_by(module)
                      if imported.startswith("retino")} for module in graph.modules}
    # A package's __init__ re-exporting its modules is not a cycle of the code's stages.
    edges = {m: {i for i in imported if not m.startswith(i + ".")} for m, imported in edges.items()}
    assert import_cycle(edges) == []


def test_retino_is_ten_stages_and_a_few_thin_commands():
    # the commands, python -m retino.<name>; not the package's __init__ nor served.py (a name
    # that old runs' pickled models look up)
    top = sorted(path.name for path in (PROJECT_ROOT / "retino").iterdir()
                 if path.suffix == ".py" and path.name not in ("__init__.py", "served.py"))
    folders = sorted(path.name for path in (PROJECT_ROOT / "retino").iterdir()
                     if (path / "__init__.py").is_file())
    assert folders == sorted(STAGES)
    assert len(top) <= 10, top
    assert {"predict.py", "evaluate.py", "report.py", "reproduce.py"} <= set(top)


@pytest.mark.slow
def test_importing_training_and_data_imports_neither_mlflow_nor_hydra():
    """Nor matplotlib: it comes when a figure is drawn (a run with plots=false draws none)."""
    check = ("import sys, retino.training.pipeline, retino.data.load.loaders, "
             "retino.data.prepare.cache; "
             "assert not {'mlflow', 'hydra', 'matplotlib'} & set(sys.modules), "
             "sorted({'mlflow', 'hydra', 'matplotlib'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", check], cwd=PROJECT_ROOT, check=True, timeout=120)


def test_every_key_with_a_role_is_a_key_of_the_config():
    keys = set(params_to_log(compose_config(["data=kaggle", "data.root=/tmp"]))) | \
        set(params_to_log(compose_config([]))) | \
        set(params_to_log(compose_config(["model=timm", "model.arch=resnet10t"])))
    unknown = set(ROLES) - keys - {GPU_PARAM}
    assert not unknown, f"key roles name keys the config does not have: {sorted(unknown)}"


# Strings that look like metric names and are not: config keys (data.train_size, the demo's
# test_size) and the file CIFAR-10 names its test batch.
NOT_METRICS = {"train_size", "test_size", "test_batch"}
METRIC_NAME = re.compile(r"(train|val|test|oof)_[a-z0-9_]*[a-z0-9]|selected_epoch|selection_score")


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def spelt_out(pattern: re.Pattern, home: str, allowed: set[str] = frozenset()) -> list[str]:
    """Where retino/ spells out a string of this pattern (docstrings aside) outside its home."""
    spelt = []
    for path in sorted((PROJECT_ROOT / "retino").rglob("*.py")):
        if path.name == home:
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        spelt += [f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.value}"
                  for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and pattern.fullmatch(node.value)
                  and node.value not in allowed]
    return spelt


def test_metric_names_are_spelt_out_in_one_module_only():
    """retino/core/metric_names.py builds every metric's name; a name spelt out elsewhere is
    one a rename would miss (115 of them were, in 15 modules)."""
    spelt = spelt_out(METRIC_NAME, "metric_names.py", NOT_METRICS)
    assert spelt == [], "use retino.core.metric_names:\n" + "\n".join(spelt)


def test_run_statuses_are_spelt_out_in_one_module_only():
    """FINISHED, FAILED, KILLED, RUNNING: retino/core/names.py (35 literals in 9 modules were)."""
    spelt = spelt_out(re.compile("FINISHED|FAILED|KILLED|RUNNING"), "names.py")
    assert spelt == [], "use retino.core.names:\n" + "\n".join(spelt)


def test_no_two_modules_of_retino_share_a_file_name():
    """A name says one thing: `python -m retino.audit` is the command, and the survey it reads
    is data/prepare/survey.py, not a second audit.py (a traceback or an import must not leave a
    reader guessing which). Packages' __init__ and __main__ are the exception."""
    names = [path.name for path in (PROJECT_ROOT / "retino").rglob("*.py")
             if path.name not in ("__init__.py", "__main__.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
