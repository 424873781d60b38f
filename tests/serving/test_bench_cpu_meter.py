"""The serving benchmark's CPU attribution (benchmarks/serving_bench_support.py: CpuMeter) against real processes:
a launcher whose worker burns CPU in its main thread and in a second thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from benchmarks.serving_bench_support import CpuMeter, cpu_per_request

# The worker spins its main thread and another thread until stdin closes, after saying it started.
WORKER = textwrap.dedent(
    """
    import sys, threading
    stop = threading.Event()
    def spin():
        while not stop.is_set():
            sum(range(1000))
    threading.Thread(target=spin, daemon=True).start()
    print("started", flush=True)
    import select
    while not select.select([sys.stdin], [], [], 0)[0]:
        sum(range(1000))
    stop.set()
    """
)
# The launcher starts the worker and waits on it, as `churnops serve` starts uvicorn's workers.
LAUNCHER = textwrap.dedent(
    f"""
    import subprocess, sys
    worker = subprocess.Popen([sys.executable, "-c", {WORKER!r}], stdin=sys.stdin, stdout=sys.stdout)
    sys.exit(worker.wait())
    """
)


def test_cpu_of_a_worker_is_split_into_its_event_loop_and_other_threads_and_the_launcher_stays_apart():
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout.readline().strip() == "started"
        meter = CpuMeter(launcher.pid, postgres_pids=lambda: [])
        before = meter.sample()
        after, deadline = before, time.monotonic() + 60  # a bound that fails the test instead of hanging it
        # Await the event itself (CPU accumulated in both threads), not a wall-clock duration.
        while (
            after["event loop"] - before["event loop"] < 0.2 or after["other threads"] - before["other threads"] < 0.2
        ):
            assert time.monotonic() < deadline, f"the worker's CPU never showed in its roles: {before} -> {after}"
            after = meter.sample()
    finally:
        launcher.stdin.close()
        launcher.wait(30)
    assert after["server processes"] - before["server processes"] < 0.1  # the launcher only waits
    assert after["postgres"] == before["postgres"] == 0.0
    per_request = cpu_per_request(before, after, {"requests": 1000, "wrk_cpu_s": 0.5})
    assert per_request["wrk"] == 500.0  # 0.5 s over 1000 requests
    assert per_request["event loop"] >= 200.0


def test_connections_per_worker_counts_each_workers_established_connections(tmp_path):
    """The split the benchmark prints per round: 6 connections, each answered, add up to 6 over the workers that
    answered them (the supervisor holds none)."""
    import socket
    from collections import Counter

    from benchmarks.serving_bench_support import connections_per_worker
    from tests.serving.conftest import unused_port
    from tests.serving.test_workers import answer_on, launched, wait_for_workers

    port, log_path = unused_port(), tmp_path / "launcher.log"
    with launched(port, log_path) as process:
        wait_for_workers(port, process, log_path)
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
        try:
            answered_by = Counter(answer_on(connection) for connection in connections)
            counted = connections_per_worker(process.pid, port)
        finally:
            for connection in connections:
                connection.close()
    assert counted == sorted(answered_by.values(), reverse=True)
