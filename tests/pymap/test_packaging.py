"""``import mu``: installed from coordinator/pymap/ under the name users guess, once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest

import mu
from tests.conftest import ROOT


def test_mu_is_the_pymap_package():
    assert mu.__file__ == str(ROOT / "coordinator" / "pymap" / "__init__.py")
    assert callable(mu.map) and mu.Executor.__module__ == "mu.executor"


def test_the_package_cannot_be_imported_a_second_time_under_its_folders_name():
    proc = subprocess.run(
        [sys.executable, "-c", "import coordinator.pymap"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "import this package as 'mu'" in proc.stderr


def test_a_checkout_that_was_not_installed_runs_mu_pymap(tmp_path):
    """``PYTHONPATH=checkout`` without the install's name mapping (``-S``: no .pth files), as a
    container running the checkout as it is: ``import mu`` is made from coordinator/pymap/."""
    site = sysconfig.get_paths()["purelib"]  # the packages, but not the editable install's finder
    items = tmp_path / "items.jsonl"
    items.write_text("3\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{site}"}
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "coordinator", "pymap", "tests.pymap.funcs:square",
         "--items", str(items), "-n", "1", "-t", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '{"item": 0, "result": 9}'


def test_importing_mu_loads_no_coordinator_code():
    """A function's module may say ``import mu``; on a worker only the standard library is there."""
    code = (
        "import sys, mu; print(sorted(m for m in sys.modules if m.split('.')[0] in ('coordinator', 'boto3')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_every_package_folder_is_listed_for_setuptools():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: name for name, folder in config["package-dir"].items()}
    found = [
        mapped.get(folder, folder.replace("/", "."))
        for folder in (init.parent.relative_to(ROOT).as_posix() for init in ROOT.glob("**/__init__.py"))
        if folder.split("/")[0] in ("coordinator", "lambda_worker")
    ]
    assert sorted(config["packages"]) == sorted(found)


def dockerfile_copies() -> list[str]:
    """What the Dockerfile copies before it runs ``pip install .``."""
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("RUN pip install"):
            return copied
        if line.startswith("COPY "):
            copied += [src.rstrip("/") for src in line.split()[1:-1]]
    raise AssertionError("the Dockerfile runs no pip install")


@pytest.mark.timeout(300)
def test_the_image_installs_mu_from_what_the_dockerfile_copies(tmp_path):
    source = tmp_path / "src"
    for name in dockerfile_copies():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(source)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("mu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mu/__init__.py" in names and "mu/executor.py" in names
    assert not [n for n in names if n.startswith("coordinator/pymap/")]
    assert "lambda_worker/pycall/runner.py" in names and "coordinator/report/progress.py" in names
