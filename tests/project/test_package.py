"""retino is an installable package: `pip install -e .` works (a build backend in
pyproject.toml), and `import retino` then works from any folder."""

import subprocess
import sys

import pytest

from retino import PROJECT_ROOT


@pytest.mark.slow
def test_pip_install_editable_then_import_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    # The dependencies, setuptools (the build backend) included, are this environment's, seen
    # through a .pth file: what is tested is the project's own packaging, offline (no build
    # isolation, no dependency download). Not --system-site-packages: inside a virtual
    # environment that would show the base interpreter's packages (its stock setuptools 65.5
    # cannot build an editable wheel), not the ones requirements-dev.txt installed here.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    here = [path for path in sys.path if path.endswith("site-packages")]
    (site_packages / "outer-environment.pth").write_text("\n".join(here) + "\n")
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--no-build-isolation", "-e", str(PROJECT_ROOT)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = subprocess.run([str(python), "-c", "import retino, retino.serving.grader; "
                               "print(retino.__file__)"], cwd=elsewhere, capture_output=True,
                              text=True)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == str(PROJECT_ROOT / "retino" / "__init__.py")
    assert (venv / "bin" / "retino-predict").is_file()
