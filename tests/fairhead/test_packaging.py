"""``pip install .`` from a built wheel (not editable): the package data ships and the CLI runs.

The wheel is built offline from a copy of the sources (so the repository gets no ``build/`` folder), installed
without dependencies into a target folder, and run from a folder outside the repository, so nothing is imported
from the checkout: only what the wheel installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT as REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

PIP_TIMEOUT_S = 120


def _wheel_sources() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a wheel is built from, read from pyproject.toml: (files and folders to copy, modules it must install).

    The project file, the readme it embeds, the top-level modules (``py-modules``) and the top-level folders of the
    packages ``packages.find`` includes.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    modules = tuple(setuptools["py-modules"])
    include = setuptools["packages"]["find"]["include"]
    packages = tuple(dict.fromkeys(pattern.split(".")[0].rstrip("*") for pattern in include))
    return ("pyproject.toml", project["project"]["readme"], *(f"{m}.py" for m in modules), *packages), modules + packages


#: what a wheel is built from, and the top-level modules and packages it installs
SOURCES, MODULES = _wheel_sources()


def _pip(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet",
                           "--disable-pip-version-check"], capture_output=True, text=True, cwd=cwd,
                          timeout=PIP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel's contents installed into ``site/`` (with its ``bin/fairhead`` entry point)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / name)
    _pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(src), cwd=tmp)
    wheels = list((tmp / "dist").glob("fairhead-*.whl"))
    assert len(wheels) == 1, wheels
    _pip("install", "--target", str(tmp / "site"), str(wheels[0]), cwd=tmp)
    return tmp / "site"


def _run_installed(site: Path, *args, cwd: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # the install only: the checkout is not on sys.path from this cwd
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.slow
def test_the_wheel_ships_the_presets_and_the_cli_lists_them(installed, tmp_path):
    where = _run_installed(installed, "-c", "import fairhead, fairhead.presets as p; print(fairhead.__file__); "
                                            "print(p.PRESET_DIR)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    module_file, preset_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(installed) and Path(preset_dir).is_relative_to(installed)

    listed = _run_installed(installed, str(installed / "bin" / "fairhead"), "presets", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "celeba-blond-male" in listed.stdout and "Blond_Hair" in listed.stdout


@pytest.mark.slow
def test_a_preset_resolves_from_the_installed_package(installed, tmp_path):
    """``--preset celeba-blond-male`` reaches the CelebA reader (which then names the missing root files)."""
    proc = _run_installed(installed, "-m", "fairhead.cli", "extract", "--preset", "celeba-blond-male",
                          "--root", str(tmp_path / "no-celeba"), "--out", str(tmp_path / "x.h5"), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "unknown preset" not in proc.stderr and "no preset folder" not in proc.stderr
    assert "list_attr_celeba.txt" in proc.stderr or "img_align_celeba" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_wheel_installs_every_module_pyproject_names(installed, tmp_path):
    code = "import importlib, sys; print('\\n'.join(importlib.import_module(m).__file__ for m in sys.argv[1:]))"
    proc = _run_installed(installed, "-c", code, *MODULES, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split()
    assert len(files) == len(MODULES) and all(Path(f).is_relative_to(installed) for f in files), files


def test_pyproject_names_every_top_level_module_and_package_of_the_checkout():
    """What the wheel tests build from is pyproject's list, and that list is the checkout's: no module left out."""
    in_checkout = {p.stem for p in REPO.glob("*.py")} | {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert set(MODULES) == in_checkout
    assert all((REPO / name).exists() for name in SOURCES), SOURCES
