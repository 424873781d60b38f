"""The installed project claims one top-level name, `churnops`: the stages are `churnops.jobs`, `churnops.serving`
and `churnops.monitoring` (docs/architecture.md, Packaging), in the checkout's editable install and in a built wheel,
and the stages' folder names are never a second way in."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("jobs", "serving", "monitoring")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("where", ["checkout root", "elsewhere"])
def test_a_stage_is_not_importable_by_its_folder_name(stage, where, tmp_path):
    # A fresh interpreter: from the checkout's root its folders are on sys.path as the current directory (what
    # `python -m` sees); elsewhere only the installed project can put them there.
    cwd = REPO if where == "checkout root" else tmp_path
    result = subprocess.run([sys.executable, "-c", f"import {stage}"], cwd=cwd, capture_output=True, text=True)
    assert result.returncode != 0, f"`import {stage}` worked from the {where}: a second name for churnops.{stage}"
    assert f"import churnops.{stage}, not {stage}" in result.stderr or f"No module named '{stage}'" in result.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_is_its_top_level_folder_inside_churnops(stage):
    module = importlib.import_module(f"churnops.{stage}")
    assert Path(module.__file__).resolve() == (REPO / stage / "__init__.py").resolve()


def uv_command() -> list[str]:
    if uv := shutil.which("uv"):
        return [uv]
    python = shutil.which("python3")
    if python and subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
        return [python, "-m", "uv"]
    pytest.skip("uv is not installed (`make env` bootstraps it with `python3 -m pip install uv`)")


@pytest.mark.slow
def test_the_wheel_holds_the_stages_inside_churnops_only(tmp_path):
    dist = tmp_path / "dist"
    build = [*uv_command(), "build", "--wheel", "--out-dir", str(dist), str(REPO)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = dist.glob("churnops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"churnops"}
    assert {"churnops/jobs/training/gate.py", "churnops/serving/app.py", "churnops/monitoring/alerts.yml"} <= set(names)
    assert [name for name in names if "__pycache__" in name or name.endswith(".pyc")] == []

    # Unpacked ahead of the checkout on sys.path, the wheel's copy is the one imported.
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = "import churnops.jobs.training.gate as gate, churnops.serving.app, churnops.monitoring.drift; "
    probe += "print(gate.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()) == unpacked / "churnops" / "jobs" / "training" / "gate.py"
