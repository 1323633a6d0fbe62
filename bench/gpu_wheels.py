"""The Python 3.12 wheels the GPU machine needs to run retino: it has no network, and its own
Python 3.12 with torch, so what the project needs beyond its image travels as wheels.

    python bench/gpu_wheels.py DIR        # or: bash bench/gpu_wheels.sh DIR

The list is derived, not kept by hand: every distribution that requirements.txt (and pytest,
for the CUDA tests) needs, followed through their own requirements as installed here, less
torch, torchvision and the CUDA libraries (never carried: the machine's own are the ones that
match its driver), less what the machine's image already holds (IMAGE_PACKAGES, the list
.library/device/KINDS.md gives). Each is downloaded once as a wheel for CPython 3.12 on
x86-64 Linux (a pure-Python one that PyPI has only as a source archive is built here), into
DIR with MANIFEST.txt; the whole must stay under 60 MiB, the most a call can carry beside the
project.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGE_PACKAGES = Path(__file__).resolve().parent / "gpu_image_packages.txt"
NEVER_CARRIED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
LIMIT_MIB = 60
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64",
          "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "os_name": "posix"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "any")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level(requirement_files: Iterable[Path]) -> list[Requirement]:
    """The requirements the files list (following -r includes), comments and options aside."""
    found = []
    for path in requirement_files:
        for line in Path(path).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                found += top_level([Path(path).parent / line[2:].strip()])
            elif line and not line.startswith("-"):
                found.append(Requirement(line))
    return found


def closure(requirements: Iterable[Requirement],
            requires_of: Callable[[str], tuple[str, list[str]]]) -> dict[str, str]:
    """name -> version of every distribution the requirements need on the target machine
    (markers evaluated for TARGET, extras followed), walking requires_of(name) -> (installed
    version, its requirement strings)."""
    environment = default_environment() | TARGET
    needed: dict[str, str] = {}
    queue = [(requirement, "") for requirement in requirements]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate(environment | {"extra": extra}):
            continue
        name = canonical(requirement.name)
        extras = set(requirement.extras)
        if name in needed and not extras:
            continue
        version, requires = requires_of(name)
        needed[name] = version
        for text in requires:
            queue += [(Requirement(text), chosen) for chosen in [""] + sorted(extras)]
    return needed


def installed(name: str) -> tuple[str, list[str]]:
    """What this environment installed for name: its version and its requirements."""
    distribution = metadata.distribution(name)
    return distribution.version, list(distribution.requires or [])


def image_packages(path: Path = IMAGE_PACKAGES) -> set[str]:
    return {canonical(line.strip()) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def to_carry(needed: dict[str, str], present: set[str]) -> dict[str, str]:
    """The distributions to carry: needed, not in the image, never torch or CUDA."""
    return {name: version for name, version in sorted(needed.items())
            if name not in present and not NEVER_CARRIED.match(name)}


def download(name: str, version: str, folder: Path) -> None:
    """The 3.12 x86-64 wheel of name==version into folder, or one built here from the source
    archive when PyPI has none (pure-Python packages such as antlr4-python3-runtime 4.9)."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
         f"{name}=={version}"], capture_output=True, text=True)
    if fetched.returncode == 0:
        return
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "-w", str(folder), f"{name}=={version}"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"no wheel for {name}=={version}: {fetched.stderr.strip()[-400:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--list", action="store_true", help="print what would travel, fetch none")
    args = parser.parse_args(argv)
    requirements = top_level([PROJECT_ROOT / "requirements.txt"]) + [Requirement("pytest")]
    carried = to_carry(closure(requirements, installed), image_packages())
    print(f"{len(carried)} distributions to carry: "
          + ", ".join(f"{name}=={version}" for name, version in carried.items()))
    if args.list:
        return 0
    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        for name, version in carried.items():
            download(name, version, Path(staging))
        for wheel in Path(staging).glob("*.whl"):
            wheel.replace(args.folder / wheel.name)
    wheels = sorted(args.folder.glob("*.whl"))
    mib = sum(wheel.stat().st_size for wheel in wheels) / 2**20
    (args.folder / "MANIFEST.txt").write_text("".join(f"{w.name}\n" for w in wheels))
    print(f"{len(wheels)} wheels, {mib:.1f} MiB in {args.folder}")
    if mib > LIMIT_MIB:
        print(f"over the {LIMIT_MIB} MiB a call can carry", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
