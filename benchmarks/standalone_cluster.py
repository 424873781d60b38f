"""A Spark standalone cluster (one master, one worker) started for a benchmark and stopped after it, so that the
driver JVM and the executor JVMs are separate processes whose memory can be read apart (`memory_sampler.py`).

The same daemons as the native stack's `spark-master` and `spark-worker` services and compose's (pyspark's own
`spark-class`, so the same Spark jars), but on free ports, as children of the benchmark (the sampler finds the
executors among its descendants), with their logs and work folders under the benchmark's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PYSPARK_HOME = Path(__import__("pyspark").__file__).parent
START_TIMEOUT_SECONDS = 300  # generous: two JVMs starting on a loaded two-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
            return sum(worker.get("state") == "ALIVE" for worker in json.load(response).get("workers", []))
    except (urllib.error.URLError, OSError, ValueError):
        return 0


@contextlib.contextmanager
def standalone_cluster(folder: Path, cores: int, worker_memory: str) -> Iterator[str]:
    """Yield the master URL of a running cluster whose worker offers `cores` and `worker_memory`."""
    folder.mkdir(parents=True, exist_ok=True)
    port, ui_port, worker_ui_port = _free_port(), _free_port(), _free_port()
    spark_class = str(PYSPARK_HOME / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": str(PYSPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    master_url = f"spark://127.0.0.1:{port}"
    commands = {
        "master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
        + ["--port", str(port), "--webui-port", str(ui_port)],
        "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1"]
        + ["--cores", str(cores), "--memory", worker_memory, "--webui-port", str(worker_ui_port)]
        + ["--work-dir", str(folder / "work")],
    }
    started: list[subprocess.Popen] = []
    try:
        for name, command in commands.items():
            with (folder / f"{name}.log").open("ab") as log:
                started.append(
                    subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while _alive_workers(ui_port) < 1:
            if time.monotonic() > deadline or any(process.poll() is not None for process in started):
                raise RuntimeError(f"the standalone Spark cluster did not come up: see the logs in {folder}")
            time.sleep(1)
        yield master_url
    finally:
        for process in reversed(started):  # the worker first: it stops its executors
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
