"""`churnops serve --workers N` gives each worker a listening socket of its own (serving/workers.py): connections a
client opens at once are spread over the workers, a dead worker gets no new connections while its replacement
starts, and a port something already listens on is refused rather than shared. Run with a minimal app
(tests/serving/pid_app.py) whose every answer is the process id of the worker that served it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import unused_port

REPO = Path(__file__).resolve().parents[2]
APP = "tests.serving.pid_app:app"


def launcher(port: int, workers: int = 2) -> list[str]:
    host, module = ["--host", "127.0.0.1", "--port", str(port)], "churnops.serving.workers"
    return [sys.executable, "-m", module, APP, *host, "--workers", str(workers)]


@contextlib.contextmanager
def launched(port: int, log_path: Path) -> Iterator[subprocess.Popen]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            launcher(port), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def served_by(port: int) -> int | None:
    """The worker that answers a request on a new connection (None: no answer)."""
    try:
        return int(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text)
    except httpx.HTTPError:
        return None


def wait_for_workers(port: int, process: subprocess.Popen, log_path: Path, count: int = 2) -> set[int]:
    """The workers' process ids, once `count` different ones have answered (each connection goes to one at random)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count:
        assert process.poll() is None, f"the launcher exited with {process.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"{count} workers did not answer within 60 s:\n{log_path.read_text()}"
        pid = served_by(port)
        if pid is None:
            time.sleep(0.1)
        else:
            seen.add(pid)
    return seen


def answer_on(connection: socket.socket) -> int:
    """Send one request on an open connection and read the worker's process id from the answer."""
    connection.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(4096)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(body) < length:
        body += connection.recv(4096)
    return int(body)


def has_exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_connections_a_client_opens_at_once_are_spread_over_the_workers(tmp_path) -> None:
    port, log_path = unused_port(), tmp_path / "launcher.log"
    with launched(port, log_path) as process:
        first, second = sorted(wait_for_workers(port, process, log_path))
        # The client's pool connects while both workers are busy (stopped here), then one worker frees up before
        # the other: from one socket shared by the workers, that one would accept every waiting connection.
        for pid in (first, second):
            os.kill(pid, signal.SIGSTOP)
        try:
            connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(64)]
        finally:
            os.kill(first, signal.SIGCONT)
            time.sleep(0.5)  # the pass condition does not depend on it: it gives a shared socket the time to fail
            os.kill(second, signal.SIGCONT)
        try:
            per_worker = Counter(answer_on(connection) for connection in connections)
        finally:
            for connection in connections:
                connection.close()
    assert set(per_worker) == {first, second}
    # Each connection picks a socket by a hash of its addresses: fewer than 8 of 64 on one of two happens by chance
    # less than once in a billion runs.
    assert min(per_worker.values()) >= 8, per_worker


def test_a_killed_worker_gets_no_new_connections_and_is_replaced(tmp_path) -> None:
    port, log_path = unused_port(), tmp_path / "launcher.log"
    with launched(port, log_path) as process:
        killed, survivor = sorted(wait_for_workers(port, process, log_path))
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not has_exited(killed):
            assert time.monotonic() < deadline, "the killed worker did not exit"
            time.sleep(0.01)
        answers = [served_by(port) for _ in range(30)]
        assert None not in answers, "a connection was refused or dropped while a worker was down"
        assert killed not in answers
        replacement = wait_for_workers(port, process, log_path) - {survivor}
        assert killed not in replacement
        assert [parent_of(pid) for pid in replacement] == [process.pid], "the supervisor started the replacement"


def test_sigterm_stops_the_supervisor_and_every_worker(tmp_path) -> None:
    port, log_path = unused_port(), tmp_path / "launcher.log"
    with launched(port, log_path) as process:
        workers = wait_for_workers(port, process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
        assert all(has_exited(pid) for pid in workers)


@pytest.mark.parametrize("reuse_port", [False, True], ids=["a plain listener", "another server's SO_REUSEPORT socket"])
def test_a_port_something_listens_on_is_refused_naming_the_address(reuse_port: bool) -> None:
    with socket.socket() as listener:
        if reuse_port:  # what another `churnops serve` holds: the workers' sockets could join it, and must not
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = subprocess.run(launcher(port), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in result.stderr
