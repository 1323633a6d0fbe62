"""A run's identity beyond its config: the code version and the data digest, and the prepared
cache that may not change under the runs that read it."""

import json
import shutil

import pytest

from retino import PROJECT_ROOT
from retino.core.errors import DataError
from retino.core.locks import try_lock
from retino.data.load.digest import data_identity
from retino.data.prepare.cache import cache_dir, main, prepare_cache
from retino.jobs.identity import code_version
from tests.helpers.sources import SIZE, make_kaggle_source


def test_code_version_follows_code_and_configs_not_readme_or_launcher_presets(tmp_path):
    for name in ("retino", "conf"):
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "run.py", tmp_path / "run.py")
    original = code_version(tmp_path)
    assert original == code_version()  # a copy outside git has the same version
    (tmp_path / "README.md").write_text("edited\n")
    (tmp_path / "conf" / "hydra" / "launcher" / "slurm.yaml").write_text("timeout_min: 999\n")
    (tmp_path / "retino" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "retino" / "__pycache__" / "x.py").write_text("# cache\n")
    assert code_version(tmp_path) == original
    with (tmp_path / "conf" / "augmentation" / "flip.yaml").open("a") as f:
        f.write("# edited\n")
    assert code_version(tmp_path) != original


def test_data_digest_follows_the_split_csvs_and_the_manifest(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=8)
    assert main(["--no-audit",
                 str(source), str(tmp_path / "cache"), "--size", str(SIZE), "--workers", "1"]) == 0
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    first = data_identity(cache)
    assert sum(first.sizes.values()) == 16 and first.manifest["split_seed"] == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["created"] = "another day"  # when it was made is not what it is
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert data_identity(cache).digest == first.digest
    labels = (cache / "test_label.csv").read_text().splitlines()
    labels[0] = str((int(labels[0]) + 1) % 5)  # one grade corrected
    (cache / "test_label.csv").write_text("\n".join(labels) + "\n")
    corrected = data_identity(cache).digest
    assert corrected != first.digest
    (cache / "patients.csv").write_text("image,patient\n0_left,7\n")  # whose eye: another split
    assert data_identity(cache).digest != corrected


def test_preparing_into_a_cache_with_another_split_seed_is_refused_and_rewrites_nothing(
        tmp_path, caplog):
    source = make_kaggle_source(tmp_path / "kaggle", patients=12)
    out = tmp_path / "cache"
    assert main(["--no-audit", str(source), str(out), "--size", str(SIZE), "--workers", "1"]) == 0
    cache = cache_dir(out, "center_crop", SIZE)
    before = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    manifest = json.loads(before["manifest.json"])
    assert manifest["split_seed"] == 0 and len(manifest["split_digest"]) == 16
    assert main(["--no-audit", str(source), str(out), "--size", str(SIZE), "--seed", "1"]) == 2
    assert "--force" in caplog.text and "split differently" in caplog.text
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()} == before
    # The same seed again only finishes what is missing; --force re-splits on purpose.
    assert main(["--no-audit", str(source), str(out), "--size", str(SIZE), "--seed", "0"]) == 0
    assert main(["--no-audit",
                 str(source), str(out), "--size", str(SIZE), "--seed", "1", "--force"]) == 0
    assert json.loads((cache / "manifest.json").read_text())["split_seed"] == 1


def test_a_second_preparation_into_the_same_cache_at_once_is_refused(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=4)
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    held = try_lock(cache / ".prepare.lock")  # another `prepare` is writing there
    with pytest.raises(DataError, match="Another preparation is writing into"):
        prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    held.close()
    assert prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)


def test_reproducing_a_run_of_other_code_warns(caplog):
    from retino.studies.reproduction import warn_if_code_changed

    warn_if_code_changed(code_version(), "run same")
    assert caplog.text == ""
    warn_if_code_changed("0123456789ab", "run old")
    assert f"The code changed since run old was run (code version 0123456789ab, now " \
           f"{code_version()})" in caplog.text
