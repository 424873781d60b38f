"""Peak memory of a benchmark's driver process and of its children, sampled every 100 ms in a background thread.

Parts, each with its own peak: the Python process itself (RSS), the JVM it started (py4j's gateway: the Spark
driver and, in local mode, the executors' threads; RSS), the executor JVMs of a standalone cluster the benchmark
started as its children (`standalone_cluster.py`; RSS), and the Python workers the JVMs fork (PySpark's daemon and
its forks; proportional set size, since summing their RSS would count the pages they share with the daemon once
per fork). A cluster's master and worker daemons are left out (a few hundred MiB that do not grow with the data).
The total's peak is taken over the same samples, so it is not the sum of the peaks.

Beside the peaks, the CPU seconds (user + system) the whole process tree spent while sampled, daemons included:
each process's own CPU time as last seen, less what it had when sampling began. A time that does not depend on
what else the machine runs, so sizes measured under different loads can be compared (a process's CPU after its
last sample, at most one interval, is not counted).
Used by `feature_job_memory.py` and `scale.py`.
"""

from __future__ import annotations

import threading
import time

import psutil

_EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"
_DAEMON_CLASSES = ("org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker")


def _jvm_role(process: psutil.Process) -> str | None:
    """`driver`, `executor` or `daemon` for a JVM, None for any other process."""
    try:
        if process.name() != "java":
            return None
        command = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if _EXECUTOR_CLASS in command:
        return "executor"
    return "daemon" if any(name in command for name in _DAEMON_CLASSES) else "driver"


class DriverMemory:
    """Peaks, in bytes, of this process (`python_peak`), its JVM (`jvm_peak`), a standalone cluster's executor JVMs
    (`executor_peak`), the JVMs' Python workers (`workers_peak`) and of all of them at once (`total_peak`)."""

    def __init__(self, interval_seconds: float = 0.1) -> None:
        self.python_peak, self.jvm_peak, self.executor_peak, self.workers_peak, self.total_peak = 0, 0, 0, 0, 0
        self.cpu_seconds = 0.0
        # pid -> (CPU seconds when first seen, CPU seconds last seen); a pid's start time tells a reused pid apart.
        self._cpu: dict[tuple[int, float], tuple[float, float]] = {}
        self._roles: dict[int, str] = {}  # a JVM's role never changes: its command line is read once
        self._interval, self._stop = interval_seconds, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        first = True
        while not self._stop.is_set():
            own, jvm, executors, workers = me.memory_info().rss, 0, 0, 0
            children = me.children(recursive=True)
            self._count_cpu([me, *children], first)
            first = False
            for child in children:
                role = self._roles.get(child.pid) or _jvm_role(child)
                if role is not None:  # not before: spark-submit's shell becomes the JVM by exec, same pid
                    self._roles[child.pid] = role
                try:
                    if role == "driver":
                        jvm += child.memory_info().rss
                    elif role == "executor":
                        executors += child.memory_info().rss
                    elif role is None:
                        workers += child.memory_full_info().pss
                except psutil.Error:
                    pass  # a worker that ended between the listing and the reading
            self.python_peak, self.jvm_peak = max(self.python_peak, own), max(self.jvm_peak, jvm)
            self.executor_peak = max(self.executor_peak, executors)
            self.workers_peak = max(self.workers_peak, workers)
            self.total_peak = max(self.total_peak, own + jvm + executors + workers)
            time.sleep(self._interval)

    def _count_cpu(self, processes: list[psutil.Process], first: bool) -> None:
        for process in processes:
            try:
                times = process.cpu_times()
                key = (process.pid, process.create_time())
            except psutil.Error:
                continue  # ended between the listing and the reading
            spent = times.user + times.system
            # A process already running when sampling began counts from there; one started later, from zero.
            start = self._cpu[key][0] if key in self._cpu else (spent if first else 0.0)
            self._cpu[key] = (start, spent)
        self.cpu_seconds = sum(last - start for start, last in self._cpu.values())

    def __enter__(self) -> DriverMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures_mb(self, prefix: str) -> dict[str, int]:
        """The peaks in MiB, keyed `<prefix>_<part>_peak_mb`."""
        peaks = {
            "driver_python": self.python_peak,
            "driver_jvm": self.jvm_peak,
            "executor_jvm": self.executor_peak,
            "python_workers_pss": self.workers_peak,
            "total": self.total_peak,
        }
        return {f"{prefix}_{part}_peak_mb": round(value / 2**20) for part, value in peaks.items()}
