"""The CDNOW customer-value protocol of issue 18, end to end, writing docs/results/cdnow-value.md and its JSON.

Protocol: all 23,570 CDNOW customers; value = dollars spent in the 39 weeks (273 days) from 1997-10-01, i.e.
purchases on 1997-10-01 .. 1998-06-30; everything is fitted on purchases up to 1997-09-30. Targets: the value model
reaches Spearman >= 0.48 and top-10 % revenue capture >= 0.54 with MAE no worse than Pareto/NBD x Gamma-Gamma's.

The value model (`churnops.jobs.value`) is trained out of time on fortnightly cutoffs 1997-03-11 .. 1997-07-01 with
13-week (91-day) targets that all end by 1997-09-30, and chosen by Optuna on time folds inside that period. The
evaluation rows are used for the reported figures and, separately and labelled as such, for ceiling diagnostics that
never feed back into the model. Every figure on the page comes from the JSON this run writes; nothing is typed by hand.

Usage (CDNOW ships in the `lifetimes` dev dependency; nothing is downloaded):

    .venv/bin/python benchmarks/cdnow_value.py [--trials 30] [--seed 42] [--resamples 1000] [--home DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Single-threaded numerics: the machine is shared (set before numpy / LightGBM load their thread pools).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from churnops.bronze import AMOUNT, EVENT_DAY, event_part_paths, read_bronze_events, watermark  # noqa: E402
from churnops.config import Settings  # noqa: E402
from churnops.dataset import load_contract  # noqa: E402
from churnops.features import CUTOFF, ENTITY_ID, LABEL, LABEL_AVAILABLE  # noqa: E402
from churnops.jobs.cdnow import prepare_cdnow  # noqa: E402
from churnops.jobs.ingest import ingest_events  # noqa: E402
from churnops.jobs.reference_duckdb import compute_reference_features  # noqa: E402
from churnops.jobs.value.ceiling import ceiling_diagnostics  # noqa: E402
from churnops.jobs.value.features import baseline_values, cutoff_inputs  # noqa: E402
from churnops.jobs.value.history import value_in_window  # noqa: E402
from churnops.jobs.value.metrics import METRIC_NAMES, bootstrap_metrics  # noqa: E402
from churnops.jobs.value.model import events_before  # noqa: E402
from churnops.jobs.value.search import train_value_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
EVALUATION_CUTOFF = pd.Timestamp("1997-10-01")
HORIZON_DAYS = 273  # 39 weeks
WINDOW_DAYS = 91  # 13-week training targets
TRAINING_CUTOFFS = tuple(pd.Timestamp("1997-03-11") + pd.Timedelta(days=14 * i) for i in range(9))
TARGETS = {"spearman": 0.48, "capture_top_10": 0.54}
MODEL = "value model (LightGBM x Pareto/NBD offset)"
ROWS = {
    MODEL: "value_model",
    "Pareto/NBD x Gamma-Gamma": "pareto_nbd_gamma_gamma",
    "BG/NBD x Gamma-Gamma": "bgnbd_gamma_gamma",
    "Pareto/NBD x Gamma-Gamma on all purchase days": "pareto_nbd_gamma_gamma_all",
    "naive past-spend rate": "past_spend_rate",
    "$0 for everyone": "zero",
    "oracle (the realised values)": "oracle",
}


def load_cdnow(home: Path) -> tuple[pd.DataFrame, dict[pd.Timestamp, pd.DataFrame]]:
    """CDNOW through the platform's own path (source file -> validated bronze layer), and its catalog features
    at every cutoff from the DuckDB reference (the same SQL the Spark job runs)."""
    settings = Settings(home=home)
    contract = load_contract("cdnow", settings)
    prepare_cdnow(settings)
    ingest_events(contract, settings)
    events = read_bronze_events(settings, contract.name, columns=[ENTITY_ID, EVENT_DAY, AMOUNT])
    cutoffs = [c.date() for c in (*TRAINING_CUTOFFS, EVALUATION_CUTOFF)]
    observed_until = watermark(settings, contract.name) + dt.timedelta(days=1)
    parts = event_part_paths(settings, contract.name)
    catalog = compute_reference_features(contract, parts, cutoffs, observed_until, threads=1)
    by_cutoff = {
        pd.Timestamp(cutoff): rows.drop(columns=[CUTOFF, LABEL, LABEL_AVAILABLE]).set_index(ENTITY_ID)
        for cutoff, rows in catalog.groupby(CUTOFF)
    }
    return events, by_cutoff


def _print_trial(number: int, params: dict[str, Any], score: float) -> None:
    print(f"trial {number}: fold score {score:.4f} {params}", file=sys.stderr, flush=True)  # noqa: T201


def run(trials: int, seed: int, resamples: int, home: Path) -> dict[str, Any]:
    started = time.perf_counter()
    events, catalog = load_cdnow(home)
    known = events_before(events, EVALUATION_CUTOFF)  # everything the model and the baselines may read
    inputs = {c: cutoff_inputs(known, c, catalog[c]) for c in TRAINING_CUTOFFS}
    trained = train_value_model(
        inputs, known, EVALUATION_CUTOFF, HORIZON_DAYS, WINDOW_DAYS, trials, seed, on_trial=_print_trial
    )
    evaluation = cutoff_inputs(known, EVALUATION_CUTOFF, catalog[EVALUATION_CUTOFF])
    actual = value_in_window(events, evaluation.history.index, EVALUATION_CUTOFF, HORIZON_DAYS)
    predictions = {
        "value_model": trained.model.predict_at(evaluation, HORIZON_DAYS),
        **baseline_values(evaluation, HORIZON_DAYS),
        "zero": np.zeros(len(actual)),
        "oracle": actual,
    }
    bootstrap = bootstrap_metrics(actual, predictions, resamples, seed, reference="value_model")
    ceiling = ceiling_diagnostics(evaluation, actual, predictions, trained.search.params, HORIZON_DAYS, seed)
    return {
        "protocol": {
            "customers": len(actual),
            "evaluation_cutoff": str(EVALUATION_CUTOFF.date()),
            "horizon_days": HORIZON_DAYS,
            "last_purchase_day_in_horizon": str((EVALUATION_CUTOFF + pd.Timedelta(days=HORIZON_DAYS - 1)).date()),
            "customers_buying_in_horizon": int((actual > 0).sum()),
            "mean_value": float(actual.mean()),
            "training_cutoffs": [str(c.date()) for c in trained.training_cutoffs],
            "training_window_days": trained.window_days,
            "training_rows": trained.training_rows,
        },
        "selection": {
            "n_trials": trials,
            "seed": seed,
            "params": trained.search.params.as_dict(),
            "fold_score": trained.search.score,
            "fold_scores": list(trained.search.fold_scores),
            "fold_maes": list(trained.search.fold_maes),
            "baseline_fold_scores": list(trained.search.baseline_fold_scores),
            "baseline_fold_maes": list(trained.search.baseline_fold_maes),
            "folds": [
                {
                    "valid_cutoff": str(f.valid_cutoff.date()),
                    "valid_window_days": f.valid_window_days,
                    "fit_cutoffs": [str(c.date()) for c in f.fit_cutoffs],
                    "fit_window_days": f.fit_window_days,
                }
                for f in trained.folds
            ],
            "trials": trained.search.trials,
        },
        "btyd_at_evaluation_cutoff": evaluation.fit.as_dict(),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
        "metrics": _as_json(bootstrap.estimates),
        "value_model_minus": _as_json(bootstrap.differences),
        "ceiling": ceiling,
        "seconds": time.perf_counter() - started,
    }


def _as_json(estimates: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {m: asdict(e) for m, e in by_metric.items()} for name, by_metric in estimates.items()}


def _cell(estimate: dict[str, float], digits: int) -> str:
    value, low, high = estimate["value"], estimate["low"], estimate["high"]
    if not np.isfinite(value):
        return "—"
    text = f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return text.replace("-0.0000", "0.0000")  # a Gini of -1e-17 is zero


def metrics_table(metrics: dict[str, dict[str, dict[str, float]]], rows: dict[str, str], head: str) -> list[str]:
    digits = {"mae": 2, "rmse": 2, "total_ratio": 3}
    lines = [f"| {head} | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---:|" * len(METRIC_NAMES)]
    for label, key in rows.items():
        cells = [_cell(metrics[key][m], digits.get(m, 4)) for m in METRIC_NAMES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def verdict(result: dict[str, Any]) -> list[str]:
    model, btyd = result["metrics"]["value_model"], result["metrics"]["pareto_nbd_gamma_gamma"]
    lines = []
    for metric, target in TARGETS.items():
        value = model[metric]["value"]
        lines.append(f"- {metric} >= {target}: **{'met' if value >= target else 'NOT met'}** ({value:.4f}).")
    mae, btyd_mae = model["mae"]["value"], btyd["mae"]["value"]
    lines.append(
        f"- MAE no worse than Pareto/NBD x Gamma-Gamma's ${btyd_mae:.2f}: "
        f"**{'met' if mae <= btyd_mae else 'NOT met'}** (${mae:.2f})."
    )
    return lines


def page(result: dict[str, Any], command: str) -> str:
    protocol, selection, ceiling = result["protocol"], result["selection"], result["ceiling"]
    btyd = result["btyd_at_evaluation_cutoff"]
    lines = [
        "# CDNOW customer-value protocol result",
        "",
        "Written by `benchmarks/cdnow_value.py` from the run's JSON (`cdnow-value.json`, next to this page); do not",
        "edit by hand.",
        "",
        f"Command: `{command}` ({result['seconds']:.0f} s on a shared 2-core machine).",
        "",
        f"Protocol: all {protocol['customers']:,} customers; value = dollars spent from "
        f"{protocol['evaluation_cutoff']} to {protocol['last_purchase_day_in_horizon']} "
        f"({protocol['horizon_days']} days = 39 weeks; {protocol['customers_buying_in_horizon']:,} customers buy, "
        f"mean ${protocol['mean_value']:.2f}); every model and baseline is fitted on purchases before "
        f"{protocol['evaluation_cutoff']}. Intervals: 95 % percentile bootstrap, {result['bootstrap']['resamples']} "
        f"customer resamples (seed {result['bootstrap']['seed']}), the same resamples for every row.",
        "",
        *verdict(result),
        "",
        *metrics_table(result["metrics"], ROWS, "scorer"),
        "",
        "Paired differences, value model minus each other row, over the same resamples (an interval that excludes 0 "
        "is a difference the resampling does not explain away; lower is better for mae and rmse):",
        "",
        *metrics_table(
            result["value_model_minus"], {k: v for k, v in ROWS.items() if v != "value_model"}, "value model minus"
        ),
        "",
        "## How the value model was trained and chosen",
        "",
        *selection_lines(protocol, selection),
        "- BTYD parameters at the evaluation cutoff (weeks): "
        + "; ".join(f"{name} " + ", ".join(f"{k}={v:.3f}" for k, v in p.items()) for name, p in btyd.items())
        + ".",
        "",
        "## Ceiling diagnostics (on the evaluation rows; never used to choose anything)",
        "",
        *ceiling_lines(ceiling),
        "",
    ]
    return "\n".join(lines)


def _figures(values: list[float], money: bool = False) -> str:
    return ", ".join(f"${v:.2f}" if money else f"{v:.4f}" for v in values)


def selection_lines(protocol: dict[str, Any], selection: dict[str, Any]) -> list[str]:
    params = selection["params"]
    objective = params["objective"]
    if objective == "tweedie":
        objective += f" (power {params['tweedie_variance_power']:.2f})"
    folds = "; ".join(
        f"validate {f['valid_cutoff']} on {f['valid_window_days']} days, fit {f['fit_cutoffs'][0]} .. "
        f"{f['fit_cutoffs'][-1]} on {f['fit_window_days']}-day windows"
        for f in selection["folds"]
    )
    return [
        f"- Out of time: {len(protocol['training_cutoffs'])} fortnightly cutoffs {protocol['training_cutoffs'][0]} "
        f".. {protocol['training_cutoffs'][-1]}, {protocol['training_rows']:,} (customer, cutoff) rows, each target "
        f"the spend in the {protocol['training_window_days']} days after its cutoff (all end by "
        f"{protocol['evaluation_cutoff']}).",
        "- Model: LightGBM with the log Pareto/NBD x Gamma-Gamma value over the target's window as a fixed offset, "
        "so the BTYD model extrapolates from the training window to the 39-week horizon and the booster learns a "
        "multiplicative correction from horizon-free features (see `docs/value-model.md`).",
        f"- Optuna, {selection['n_trials']} trials (seed {selection['seed']}), scored on time folds by (Spearman + "
        f"top-10 % capture) / 2 less the relative excess of the fold MAE over Pareto/NBD x Gamma-Gamma's: {folds}.",
        f"- Chosen: objective `{objective}`, feature set `{params['feature_set']}`, offset spend basis "
        f"`{params['offset_spend']}`, {params['rounds']} rounds, learning rate {params['learning_rate']:.3f}, "
        f"{params['num_leaves']} leaves, min child samples {params['min_child_samples']}, target cap quantile "
        f"{params['target_cap_quantile']}. Fold scores {_figures(selection['fold_scores'])} (MAE "
        f"{_figures(selection['fold_maes'], money=True)}) vs Pareto/NBD x Gamma-Gamma "
        f"{_figures(selection['baseline_fold_scores'])} (MAE {_figures(selection['baseline_fold_maes'], money=True)}).",
    ]


def ceiling_lines(ceiling: dict[str, Any]) -> list[str]:
    lines = [
        "| diagnostic | spearman | capture_top_10 | capture_top_20 | mae | total_ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in ceiling["rows"]:
        m = row["metrics"]
        lines.append(
            f"| {row['name']} | {m['spearman']:.4f} | {m['capture_top_10']:.4f} | {m['capture_top_20']:.4f} "
            f"| {m['mae']:.2f} | {m['total_ratio']:.3f} |"
        )
    return [*lines, "", *ceiling["notes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: a fresh temp folder)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="cdnow-value-"))
    result = run(args.trials, args.seed, args.resamples, home)
    command = (
        f".venv/bin/python benchmarks/cdnow_value.py --trials {args.trials} --seed {args.seed} "
        f"--resamples {args.resamples}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cdnow-value.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / "cdnow-value.md").write_text(page(result, command))
    model = result["metrics"]["value_model"]
    print(  # noqa: T201
        f"value model: Spearman {model['spearman']['value']:.4f}, capture@10 {model['capture_top_10']['value']:.4f}, "
        f"MAE {model['mae']['value']:.2f} in {result['seconds']:.0f} s; wrote {RESULTS / 'cdnow-value.md'}"
    )


if __name__ == "__main__":
    main()
