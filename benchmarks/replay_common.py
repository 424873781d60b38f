"""What the replay scripts share (`replay_scenario.py`, `replay_cdnow.py`): running the `churnops` CLI in a working
folder of its own, where a replay lives, and the seconds per DAG read back from a replay's timeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def churnops(home: Path, *args: str) -> None:
    """Run the `churnops` CLI with `home` as its working folder and nothing inherited from the caller's platform."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "AIRFLOW", "MLFLOW_"))}
    env |= {"CHURNOPS_HOME": str(home), "CHURNOPS_SPARK__MASTER": "local[2]", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(Path(sys.executable).parent / "churnops"), *args], env=env, check=True)


def weekly_replay(home: Path, dataset: str, start: str, end: str, policy: str, trials: int) -> None:
    """`churnops replay` of `dataset` every 7 days from `start` to `end` under `policy` (resumes a killed one)."""
    churnops(home, "replay", "--dataset", dataset, "--start", start, "--end", end, "--every", "7d",
             "--policy", policy, "--trials", str(trials))  # fmt: skip


def replay_folder(home: Path, dataset: str, policy: str) -> Path:
    """The folder `churnops replay` uses by default for a dataset and a policy."""
    return home / "replays" / f"{dataset}-replay-{policy.replace(':', '-')}"


def stage_seconds(timeline: pd.DataFrame) -> dict[str, float]:
    """Median seconds per DAG over the run dates that ran it, the median step and the sum over all steps."""
    seconds = pd.DataFrame([json.loads(s) for s in timeline["seconds"]])
    return {dag: float(seconds[dag].median()) for dag in seconds.columns} | {
        "step_total": float(seconds.sum(axis=1).median()),
        "all_steps": float(seconds.sum(axis=1).sum()),
    }
