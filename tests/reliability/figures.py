"""Figures the reliability tests measure (requests sent and failed, latencies, faults, bad inputs, rows lost).

Each test calls `record` once with what it measured. The line is printed (visible with `pytest -s`) and, when
`CHURNOPS_RELIABILITY_FIGURES` names a file, appended to it as JSON, which is where docs/reliability.md takes its
figures from (the command is in that document).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

FIGURES_FILE_VARIABLE = "CHURNOPS_RELIABILITY_FIGURES"


def record(check: str, **figures: Any) -> None:
    """Report the figures of one reliability check."""
    line = json.dumps({"check": check, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **figures})
    print(f"\nreliability figures: {line}")  # noqa: T201 - the figures are the point of these tests
    target = os.environ.get(FIGURES_FILE_VARIABLE)
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(line + "\n")
