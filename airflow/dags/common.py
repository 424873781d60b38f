"""What every churnops DAG shares: default retries, the Assets that chain the DAGs, and the dataset parameter.

Kept free of heavy imports: the dag-processor imports this on every parse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import Asset, Param

START_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=2),
}

# feature DAG -> FEATURES -> training DAG -> MODEL -> scoring DAG
FEATURES = Asset("churnops://features/customer_features")
MODEL = Asset("churnops://models/champion")

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_JOB = REPO_ROOT / "jobs" / "features.py"


def dataset_param(default: str) -> Param:
    return Param(
        default,
        type="string",
        title="Dataset",
        description="Built-in dataset name (synthetic, cdnow) or the path of a dataset contract YAML.",
    )
