"""`churnops`: the command line, an edge of the system like the DAG files.

Each command builds the Settings, then calls the same functions the DAG tasks call. Nothing in the core imports
this package; it is the only part of `churnops/` that imports the stages (`jobs`, `monitoring`, `serving`), and
it imports them inside each command so `churnops --help` stays instant.
"""

from churnops.cli import pipeline, replay, stages  # noqa: F401 - importing them registers their commands
from churnops.cli.common import app

__all__ = ["app"]
