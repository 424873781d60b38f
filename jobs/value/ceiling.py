"""Ceiling diagnostics: how far could any model of these inputs go on the evaluated customers?

They read the evaluation rows' realised values on purpose and are reported apart from the results; nothing here
feeds back into the model, its parameters or its selection.

- **In-time cross-fit**: the value model's family refitted with the realised horizon values of the evaluated
  customers themselves (5 folds: each customer scored by a model that never saw them), at the round count that is
  best on these rows. No time shift and no horizon extrapolation are left, so this is what the inputs support
  when the protocol's difficulties are removed.
- **Rank target**: the same, but LightGBM fitted on each customer's rank of realised value, which is what
  Spearman measures: the most the inputs give Spearman.
- **Blend picked on the evaluation rows**: value model^(1 - w) x Pareto/NBD x Gamma-Gamma^w with the w that
  is best on the evaluation rows: what hindsight tuning of a blend would buy.
- **Scaled to the BTYD total**: the value model times one factor that makes its total equal Pareto/NBD x
  Gamma-Gamma's forecast total (no realised value read): separates the MAE that comes from the level of the whole
  forecast from the MAE that comes from the ranking.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from scipy import stats

from churnops.jobs.value.features import CutoffInputs, log_offset
from churnops.jobs.value.metrics import value_metrics
from churnops.jobs.value.model import TrainingRows, ValueModelParams, booster_params, feature_columns, fit_value_model
from churnops.jobs.value.search import selection_score

N_FOLDS = 5
# The in-time fits are judged at each of these round counts (learning rate 0.03) and keep the best on the rows.
ROUND_GRID = (25, 50, 100, 200, 400, 800)
LEARNING_RATE = 0.03
BLEND_WEIGHTS = tuple(np.round(np.arange(0.0, 1.01, 0.1), 1))


def _folds(n: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::N_FOLDS] for i in range(N_FOLDS)]


def _best_round(actual: np.ndarray, by_round: dict[int, np.ndarray]) -> tuple[int, np.ndarray]:
    best = max(by_round, key=lambda k: selection_score(actual, by_round[k]))
    return best, by_round[best]


def in_time_cross_fit(
    inputs: CutoffInputs, actual: np.ndarray, params: ValueModelParams, horizon_days: int, seed: int
) -> tuple[int, np.ndarray]:
    """Each evaluated customer's value from a value model fitted on the other folds' realised horizon values, at
    the round count of `ROUND_GRID` that is best on these rows (hindsight, as a ceiling may)."""
    ceiling_params = replace(params, learning_rate=LEARNING_RATE, rounds=max(ROUND_GRID))
    offset = log_offset(inputs.fit, inputs.history, horizon_days, params.offset_spend)
    by_round = {k: np.empty(len(actual)) for k in ROUND_GRID}
    for held_out in _folds(len(actual), seed):
        fit_mask = np.ones(len(actual), dtype=bool)
        fit_mask[held_out] = False
        rows = TrainingRows(
            features=inputs.features.iloc[fit_mask],
            target=actual[fit_mask],
            log_offset=offset[fit_mask],
            cutoff=np.full(int(fit_mask.sum()), inputs.cutoff),
        )
        model, _ = fit_value_model(rows, ceiling_params, seed)
        held = inputs.features.iloc[held_out][list(model.feature_names)]
        for k in ROUND_GRID:
            raw = model.booster.predict(held, raw_score=True, num_iteration=k)
            by_round[k][held_out] = np.exp(raw + offset[held_out])
    return _best_round(actual, by_round)


def in_time_rank_fit(
    inputs: CutoffInputs, actual: np.ndarray, params: ValueModelParams, seed: int
) -> tuple[int, np.ndarray]:
    """Cross-fitted LightGBM regression on the rank of the realised value (a score, not dollars), at the best
    round count of `ROUND_GRID` on these rows."""
    import lightgbm as lgb

    columns = list(feature_columns(inputs.features, params.feature_set))
    ranks = stats.rankdata(actual) / len(actual)
    booster = booster_params(replace(params, learning_rate=LEARNING_RATE), seed) | {"objective": "regression"}
    by_round = {k: np.empty(len(actual)) for k in ROUND_GRID}
    for held_out in _folds(len(actual), seed):
        fit_mask = np.ones(len(actual), dtype=bool)
        fit_mask[held_out] = False
        data = lgb.Dataset(inputs.features.iloc[fit_mask][columns], ranks[fit_mask])
        model = lgb.train(booster, data, num_boost_round=max(ROUND_GRID))
        for k in ROUND_GRID:
            by_round[k][held_out] = model.predict(inputs.features.iloc[held_out][columns], num_iteration=k)
    return _best_round(actual, by_round)


def best_blend_in_hindsight(actual: np.ndarray, model: np.ndarray, btyd: np.ndarray) -> tuple[float, np.ndarray]:
    """The geometric blend weight on the BTYD forecast that maximises the selection score on these very rows."""
    floor = 1e-9
    blends = {
        w: np.exp((1 - w) * np.log(np.maximum(model, floor)) + w * np.log(np.maximum(btyd, floor)))
        for w in BLEND_WEIGHTS
    }
    best = max(blends, key=lambda w: selection_score(actual, blends[w]))
    return float(best), blends[best]


def ceiling_diagnostics(
    inputs: CutoffInputs,
    actual: np.ndarray,
    predictions: dict[str, np.ndarray],
    params: ValueModelParams,
    horizon_days: int,
    seed: int,
) -> dict[str, Any]:
    """The diagnostics above as table rows (name, metrics) plus sentences stating what they show."""
    cross_rounds, cross_fit = in_time_cross_fit(inputs, actual, params, horizon_days, seed)
    rank_rounds, rank_fit = in_time_rank_fit(inputs, actual, params, seed)
    weight, blend = best_blend_in_hindsight(actual, predictions["value_model"], predictions["pareto_nbd_gamma_gamma"])
    model, btyd = predictions["value_model"], predictions["pareto_nbd_gamma_gamma"]
    factor = float(btyd.sum() / model.sum())
    rows = [
        (f"value model family cross-fitted in time on the realised values ({cross_rounds} rounds)", cross_fit),
        (f"LightGBM on the rank of the realised value, cross-fitted in time ({rank_rounds} rounds; a score)", rank_fit),
        (f"blend value model x Pareto/NBD x Gamma-Gamma, weight {weight} picked on these rows", blend),
        (
            f"value model x {factor:.3f}, the factor that matches the BTYD forecast total (reads no label)",
            model * factor,
        ),
    ]
    table = [{"name": name, "metrics": value_metrics(actual, p)} for name, p in rows]
    scaled_mae, btyd_mae = table[-1]["metrics"]["mae"], value_metrics(actual, btyd)["mae"]
    btyd_total = value_metrics(actual, btyd)["total_ratio"]
    best_spearman = max(r["metrics"]["spearman"] for r in table)
    best_capture = max(r["metrics"]["capture_top_10"] for r in table)
    oracle = value_metrics(actual, actual)["capture_top_10"]
    notes = [
        f"The best diagnostic reaches Spearman {best_spearman:.4f} and top-10 % capture {best_capture:.4f} "
        f"(a perfect ranking captures {oracle:.4f}). "
        + (
            "Even with the time shift and the horizon extrapolation removed, or the blend tuned on the answers, "
            "these inputs stay below the targets (Spearman 0.48, capture 0.54): the gap is in what a purchase "
            "history of this length says about the next 39 weeks, not in the out-of-time protocol."
            if best_spearman < 0.48 and best_capture < 0.54
            else "At least one diagnostic reaches a target, so part of the gap is the out-of-time protocol itself."
        ),
        "",
        f"Pareto/NBD x Gamma-Gamma forecasts {btyd_total:.1%} of the realised total. Scaled to the same total, the "
        f"value model's MAE is ${scaled_mae:.2f} against its ${btyd_mae:.2f}: "
        + (
            "the MAE gap is the level of the forecast (MAE rewards forecasting less than the mean when most "
            "customers spend $0), not the ranking."
            if scaled_mae <= btyd_mae
            else "the MAE gap is not only the level of the forecast."
        ),
    ]
    return {"rows": table, "notes": notes, "hindsight_blend_weight": weight, "btyd_total_factor": factor}
