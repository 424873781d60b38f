"""A test-only DAG whose two tasks can finish only together: each leaves its mark in the run's rendezvous folder
and waits for the other's. On workers that run one task at a time, a run succeeds only if its two tasks ran at the
same time on two different workers (tests/distributed/test_celery_workers.py)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from airflow.sdk import Param, dag, task

# A ceiling, not an expectation: the wait ends as soon as the other task's mark appears.
MEETING_CEILING_S = 900


@dag(
    dag_id="churnops_test_two_workers_meet",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["churnops-test"],
    default_args={"retries": 0},
    params={"rendezvous": Param("", type="string", description="a folder both workers can write")},
)
def two_workers_meet() -> None:
    @task
    def meet(me: str, other: str, params: dict | None = None) -> str:
        folder = Path(params["rendezvous"])
        (folder / me).write_text("here")
        deadline = time.monotonic() + MEETING_CEILING_S
        while not (folder / other).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{other} never arrived: it was not running while {me} waited")
            time.sleep(0.2)
        return f"{me} met {other}"

    meet.override(task_id="left")("left", "right")
    meet.override(task_id="right")("right", "left")


two_workers_meet()
