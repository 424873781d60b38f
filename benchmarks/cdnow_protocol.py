"""The CDNOW protocol of issue 9, run end to end, writing docs/results/cdnow.md and its figures.

Protocol: features only from purchases before 1997-10-01, label = any purchase in the next 90 days, all 23,570
customers (the `cdnow` dataset contract). The champion must reach ROC AUC >= 0.78 and beat BG/NBD on the same
customers. Everything on the page comes from the `evaluation.json` this run writes; nothing is typed by hand.

Usage (needs the cdnow snapshot: `churnops generate --dataset cdnow && churnops features --dataset cdnow`):

    .venv/bin/python benchmarks/cdnow_protocol.py [--trials 20] [--home /tmp/cdnow-protocol]

It trains in a separate working folder (copying the snapshot there), so the platform's own registry is untouched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.model_card import FAMILY_NAMES, metrics_table
from churnops.jobs.training import train
from churnops.snapshots import latest_snapshot_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
FIGURES = ("roc.png", "gain_lift.png", "calibration.png", "shap_summary.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: a fresh temp folder)")
    args = parser.parse_args()

    source = latest_snapshot_dir(Settings(), "cdnow")
    home = args.home or Path(tempfile.mkdtemp(prefix="cdnow-protocol-"))
    target = home / "features" / "cdnow"
    if not target.exists():
        shutil.copytree(source.parent, target)
    settings = Settings(home=home, training={"n_trials": args.trials, "seed": args.seed})
    contract = load_contract("cdnow", settings)
    started = time.perf_counter()
    result = train(settings, contract)
    seconds = time.perf_counter() - started
    evaluation = json.loads(result.evaluation_path.read_text())

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        shutil.copyfile(result.evaluation_path.parent / name, RESULTS / f"cdnow_{name}")
    shutil.copyfile(result.evaluation_path, RESULTS / "cdnow_evaluation.json")
    model_auc = evaluation["new_model"]["metrics"]["roc_auc"]
    # BG/NBD ranks customers by P(at least one purchase) and by the expected count; compare with the stronger one.
    bgnbd_name = max(("bgnbd", "bgnbd_expected_purchases"), key=lambda n: evaluation["baselines"][n]["roc_auc"])
    bgnbd_auc = evaluation["baselines"][bgnbd_name]["roc_auc"]
    selection = evaluation["selection"]
    lines = [
        "# CDNOW protocol result",
        "",
        "Written by `benchmarks/cdnow_protocol.py` from the run's `evaluation.json` (copied here as",
        "`cdnow_evaluation.json`); do not edit by hand.",
        "",
        f"Command: `.venv/bin/python benchmarks/cdnow_protocol.py --trials {args.trials} --seed {args.seed}` "
        f"({seconds:.0f} s on this machine).",
        "",
        f"Protocol: features from purchases before {evaluation['evaluation_cutoff']}, label = any purchase in the "
        f"next {evaluation['label']['horizon_days']} days, {evaluation['evaluation_rows']:,} customers. Training "
        f"cutoffs {evaluation['training_cutoffs'][0]} .. {evaluation['training_cutoffs'][-1]} (labels all end "
        "before the evaluation cutoff); every choice below was made on time folds inside that window.",
        "",
        f"- Champion candidate ({FAMILY_NAMES[selection['family']]}, chosen on the time folds' mean ROC AUC: "
        + ", ".join(f"{name} {auc:.4f}" for name, auc in selection["family_cv_roc_auc"].items())
        + f"; {selection['n_trials']} LightGBM trials, feature set `{selection['feature_set']}`, "
        f"BG/NBD blend weight {selection['blend_weight_bgnbd']}, calibration `{selection['calibration']}`): "
        f"**ROC AUC {model_auc:.4f}**.",
        f"- BG/NBD on the same customers (its stronger score, `{bgnbd_name}`): ROC AUC {bgnbd_auc:.4f} (parameters "
        + ", ".join(f"{k}={evaluation['baseline_details']['bgnbd'][k]:.3f}" for k in ("r", "alpha", "a", "b"))
        + ", time in weeks).",
        f"- Target ROC AUC >= 0.78: **{'met' if model_auc >= 0.78 else 'NOT met'}**; beats BG/NBD: "
        f"**{'yes' if model_auc > bgnbd_auc else 'no'}** (by {model_auc - bgnbd_auc:+.4f}).",
        "",
        *metrics_table(evaluation),
        "",
        "Retro-test Gini: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in evaluation["retro_test"]["gini_by_cutoff"].items())
        + f" (spread {evaluation['retro_test']['gini_spread']:.3f}).",
        "",
        "![ROC](cdnow_roc.png) ![gain and lift](cdnow_gain_lift.png)",
        "![calibration](cdnow_calibration.png) ![SHAP summary](cdnow_shap_summary.png)",
        "",
    ]
    (RESULTS / "cdnow.md").write_text("\n".join(lines))
    print(f"ROC AUC model {model_auc:.4f} vs BG/NBD {bgnbd_auc:.4f}; wrote {RESULTS / 'cdnow.md'}")  # noqa: T201


if __name__ == "__main__":
    main()
