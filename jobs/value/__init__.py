"""Customer value: expected spend over a horizon per customer, beside the churn model.

- `btyd`: Pareto/NBD and Gamma-Gamma (BG/NBD is `churnops.jobs.baselines`), fitted by maximum likelihood.
- `history`: purchase history at a cutoff and the value spent in a window after it, from the bronze events.
- `features`: the model's inputs at one cutoff (`cutoff_inputs`), the BTYD baselines (`baseline_values`), the offset.
- `model`: the LightGBM value model on a BTYD offset (`fit_value_model`, `ValueModel.predict_at`).
- `search`: time folds and the Optuna search (`train_value_model`).
- `metrics`: Spearman, revenue capture, normalized Gini, MAE, RMSE, bootstrap intervals.
- `ceiling`: diagnostics of how far any model of the same inputs could go (reports only).

See docs/value-model.md.
"""
