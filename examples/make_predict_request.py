"""Write `examples/predict_request.json` from a real row of the latest feature snapshot.

The committed example must carry exactly the features the current feature job produces (the README's curl sends
it to the champion); rerun this after the feature list changes:

    .venv/bin/python examples/make_predict_request.py [--dataset synthetic] [--customer-id 1] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.config import Settings
from churnops.features import CUTOFF, ENTITY_ID
from churnops.snapshots import latest_snapshot_dir, load_snapshot

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "predict_request.json"


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars unwrapped, NaN as null (missing), floats rounded for readability."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def predict_request(snapshot_dir: Path, customer_id: str | None = None) -> dict[str, Any]:
    """A /predict body for one customer at the snapshot's scoring cutoff (the first customer by id by default)."""
    frame, metadata = load_snapshot(snapshot_dir)
    cutoff = pd.Timestamp(metadata.cutoffs["scoring"][0])
    rows = frame[frame[CUTOFF] == cutoff].sort_values(ENTITY_ID, key=lambda ids: ids.astype(str))
    if customer_id is not None:
        rows = rows[rows[ENTITY_ID].astype(str) == customer_id]
    if rows.empty:
        raise SystemExit(f"no row for customer {customer_id!r} at the scoring cutoff {cutoff.date()}")
    row = rows.iloc[0]
    return {
        "customer_id": str(row[ENTITY_ID]),
        "features": {name: _plain(row[name]) for name in metadata.feature_columns},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="dataset name (default: CHURNOPS_DATASET or synthetic)")
    parser.add_argument("--customer-id", default=None, help="customer to take (default: the first by id)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    settings = Settings()
    snapshot_dir = latest_snapshot_dir(settings, args.dataset or settings.dataset)
    body = predict_request(snapshot_dir, args.customer_id)
    args.output.write_text(json.dumps(body, indent=2) + "\n")
    sys.stdout.write(
        f"{args.output}: customer {body['customer_id']}, {len(body['features'])} features from {snapshot_dir}\n"
    )


if __name__ == "__main__":
    main()
