"""Start the API's uvicorn processes: `python -m churnops.serving.workers APP --host H --port P --workers N`.

`churnops serve` runs this (so does the container's entrypoint). With several workers, each worker listens on a
socket of its own bound to the same address with `SO_REUSEPORT`, and the kernel picks the socket of every new
connection by a hash of its addresses. uvicorn's own `--workers` binds one socket in the supervisor that every
worker accepts from: the first worker to wake takes every connection waiting, so a client that opens its pool of
keep-alive connections at once can get them all on one worker while the other idles (docs/benchmarks/serving.md,
"sixth round"). A worker's socket joins the kernel's group when the worker listens, after its start-up, and leaves
it when the worker exits, so neither a worker still starting nor a dead one is handed new connections. uvicorn's
supervisor is kept as it is: it restarts a dead worker, and SIGHUP, SIGTTIN and SIGTTOU work as documented.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


class PortInUseError(RuntimeError):
    """Something already listens on the address: a second server would share its connections, not replace it."""


def _tcp_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def _bind_in_worker(host: str, port: int) -> socket.socket:
    """The worker's own socket, bound with SO_REUSEPORT and not yet listening (the worker's server listens)."""
    sock = _tcp_socket(host)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections of a previous run in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        logger.error("cannot bind %s:%d: %s", host, port, error)
        # The supervisor stops instead of restarting a worker that cannot start.
        sys.exit(STARTUP_FAILURE)
    return sock


class WorkerListener:
    """What the supervisor hands each worker instead of a socket. uvicorn starts a worker with multiprocessing's
    spawn, which pickles the worker's arguments: this object unpickles, in the new worker, as a socket bound there,
    so every worker (a restarted one too) gets a socket of its own and the supervisor holds none."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return _bind_in_worker, (self.host, self.port)


def claim_port(host: str, port: int) -> int:
    """Check that nothing listens on (host, port) and return the port (the one the kernel chose for port 0).

    Binds without SO_REUSEPORT, which fails while any socket listens there, even another churnops server's
    SO_REUSEPORT sockets (which the workers' sockets would otherwise join)."""
    probe = _tcp_socket(host)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return probe.getsockname()[1]
    except OSError as error:
        raise PortInUseError(
            f"cannot serve on {host}:{port}: {error.strerror}; stop what listens there or pick another --port"
        ) from None
    finally:
        probe.close()


def serve(app: str, host: str, port: int, workers: int, app_dir: str | None = None) -> None:
    """Serve the ASGI app `app` (an import string) with `workers` processes until SIGINT or SIGTERM."""
    if app_dir:
        sys.path.insert(0, app_dir)  # the workers inherit sys.path through spawn
    if workers == 1:
        uvicorn.run(app, host=host, port=port, access_log=False)
        return
    port = claim_port(host, port)
    config = uvicorn.Config(app, host=host, port=port, workers=workers, access_log=False)
    logger.info("%d workers, each on its own socket (SO_REUSEPORT) at %s:%d", workers, host, port)
    Multiprocess(config, sockets=[WorkerListener(host, port)]).run()  # type: ignore[list-item]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", help="the ASGI app as module:attribute")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--app-dir", help="a folder to import the app from")
    args = parser.parse_args(argv)
    try:
        serve(args.app, args.host, args.port, args.workers, args.app_dir)
    except PortInUseError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
