"""retino is an installable package: `pip install -e .` works (a build backend in
pyproject.toml), and `import retino` then works from any folder."""

import subprocess
import sys

import pytest

from retino import PROJECT_ROOT


@pytest.mark.slow
def test_pip_install_editable_then_import_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    # The dependencies are this environment's (--system-site-packages): what is tested is the
    # project's own packaging, offline (no build isolation, no dependency download).
    # (without a pip of its own: this one installs into it, with this setuptools as backend)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
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
