#!/usr/bin/env bash
# Starts the churnops API with several uvicorn workers (`churnops serve --workers N`).
#
# prometheus-client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR set before Python starts and emptied at
# every start: files left by a previous run would be summed into the new counters.
set -euo pipefail

: "${PROMETHEUS_MULTIPROC_DIR:?PROMETHEUS_MULTIPROC_DIR must be set for multi-worker metrics}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

# `churnops serve` as on one machine: it refuses a bind beyond loopback without an API key, and gives each worker a
# listening socket of its own (churnops/serving/workers.py).
exec churnops serve \
    --host "${CHURNOPS_API_BIND_HOST:-0.0.0.0}" \
    --port "${CHURNOPS_SERVING__PORT:-8000}" \
    --workers "${CHURNOPS_API_WORKERS:-2}"
