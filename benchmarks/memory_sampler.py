"""Peak memory of a benchmark's driver process and of its children, sampled every 100 ms in a background thread.

Three parts, each with its own peak: the Python process itself (RSS), the JVM it started (py4j's gateway: the Spark
driver and, in local mode, the executors' threads; RSS), and the Python workers that JVM forks (PySpark's daemon
and its forks; proportional set size, since summing their RSS would count the pages they share with the daemon once
per fork). The total's peak is taken over the same samples, so it is not the sum of the three peaks.
Used by `feature_job_memory.py` and `scale.py`.
"""

from __future__ import annotations

import threading
import time

import psutil


def _is_jvm(process: psutil.Process) -> bool:
    try:
        return process.name() == "java"
    except psutil.Error:
        return False


class DriverMemory:
    """Peaks, in bytes, of this process (`python_peak`), its JVM (`jvm_peak`), the JVM's Python workers
    (`workers_peak`) and of all three at once (`total_peak`)."""

    def __init__(self, interval_seconds: float = 0.1) -> None:
        self.python_peak, self.jvm_peak, self.workers_peak, self.total_peak = 0, 0, 0, 0
        self._interval, self._stop = interval_seconds, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            own, jvm, workers = me.memory_info().rss, 0, 0
            for child in me.children(recursive=True):
                try:
                    if _is_jvm(child):
                        jvm += child.memory_info().rss
                    else:
                        workers += child.memory_full_info().pss
                except psutil.Error:
                    pass  # a worker that ended between the listing and the reading
            self.python_peak, self.jvm_peak = max(self.python_peak, own), max(self.jvm_peak, jvm)
            self.workers_peak = max(self.workers_peak, workers)
            self.total_peak = max(self.total_peak, own + jvm + workers)
            time.sleep(self._interval)

    def __enter__(self) -> DriverMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures_mb(self, prefix: str) -> dict[str, int]:
        """The four peaks in MiB, keyed `<prefix>_<part>_peak_mb`."""
        peaks = {
            "driver_python": self.python_peak,
            "driver_jvm": self.jvm_peak,
            "python_workers_pss": self.workers_peak,
            "total": self.total_peak,
        }
        return {f"{prefix}_{part}_peak_mb": round(value / 2**20) for part, value in peaks.items()}
