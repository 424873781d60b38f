"""The name Airflow records as a task's host (`task_instance.hostname`), telling apart workers that share a machine.

The native stack runs two Celery workers on one host; with Airflow's default (the fully qualified domain name) both
would record the same name. Each worker service sets CHURNOPS_AIRFLOW_WORKER_NAME, and the stack points Airflow's
`[core] hostname_callable` here. Elsewhere (compose, where every container has its own host name, and the embedded
default) nothing is set and the result is the plain host name.
"""

from __future__ import annotations

import os
import socket

WORKER_NAME_VARIABLE = "CHURNOPS_AIRFLOW_WORKER_NAME"


def airflow_hostname() -> str:
    """`<worker>@<host>` (Celery's own spelling of a node) when the worker has a name, else the host name."""
    host = socket.getfqdn()
    worker = os.environ.get(WORKER_NAME_VARIABLE, "").strip()
    return f"{worker}@{host}" if worker else host
