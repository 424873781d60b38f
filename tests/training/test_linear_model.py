"""The logistic regression in its registrable form (`churnops.linear_model.LinearModel`, JSON numbers) scores the
encoded matrix exactly as the scikit-learn pipeline it was taken from, and explains itself like LightGBM does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.crm_example import build_crm_export
from churnops.jobs.training.candidates import decoded_frame, fit_linear, fit_pipeline, linear_model_from_pipeline
from churnops.jobs.training.data import EncodedView
from churnops.linear_model import LinearModel
from churnops.schema import FeatureSchema

NUMERIC = ["age", "tenure_days", "visits_90d", "support_calls_90d", "spend_90d"]
CATEGORICAL = ["plan", "region", "channel"]


@pytest.fixture(scope="module")
def crm_view() -> tuple[EncodedView, np.ndarray]:
    """The CRM example export (blank spend cells as missing values), encoded as training encodes it; the last 200
    rows stand for rows the model never saw, one of them with a plan the schema does not know."""
    table = build_crm_export(n_customers=1_500, seed=5, quirks=True)
    table["spend_90d"] = pd.to_numeric(table["spend_90d"], errors="coerce")
    table["churned"] = (table["churned"] == "Yes").astype(int)
    train, unseen = table.iloc[:-200].copy(), table.iloc[-200:].copy()
    unseen.iloc[0, unseen.columns.get_loc("plan")] = "a plan launched after training"
    schema = FeatureSchema.fit(train, NUMERIC, CATEGORICAL)
    assert train["spend_90d"].isna().any()
    return EncodedView(schema, schema.encode_frame(train), schema.encode_frame(unseen)), train["churned"].to_numpy()


def test_the_linear_model_predicts_what_the_sklearn_pipeline_predicts(crm_view) -> None:
    view, labels = crm_view
    every_row = np.ones(len(labels), dtype=bool)
    pipeline = fit_pipeline(view, labels, every_row)
    model = linear_model_from_pipeline(pipeline, view, view.x_train)

    for matrix in (view.x_train, view.x_eval):
        expected = pipeline.predict_proba(decoded_frame(view, matrix))[:, 1]
        np.testing.assert_allclose(model.predict(matrix), expected, rtol=0, atol=1e-9)


def test_contributions_sum_to_the_logit_with_the_bias_last(crm_view) -> None:
    view, labels = crm_view
    model = fit_linear(view, labels, np.ones(len(labels), dtype=bool))
    contributions = model.predict(view.x_eval, pred_contrib=True)
    probabilities = model.predict(view.x_eval)

    assert contributions.shape == (len(view.x_eval), len(view.schema.columns) + 1)
    np.testing.assert_allclose(contributions.sum(axis=1), np.log(probabilities / (1 - probabilities)), atol=1e-9)
    # Centred like SHAP values: each feature's term averages zero over the rows the model was fitted on.
    np.testing.assert_allclose(model.predict(view.x_train, pred_contrib=True)[:, :-1].mean(axis=0), 0, atol=1e-9)


def test_feature_names_and_importances_follow_the_schema(crm_view) -> None:
    view, labels = crm_view
    model = fit_linear(view, labels, np.ones(len(labels), dtype=bool))
    importance = model.feature_importance(importance_type="gain")

    assert model.feature_name() == view.schema.columns
    assert importance.shape == (len(view.schema.columns),) and (importance >= 0).all() and importance.sum() > 0


def test_the_json_round_trip_scores_identically(crm_view) -> None:
    view, labels = crm_view
    model = fit_linear(view, labels, np.ones(len(labels), dtype=bool))
    again = LinearModel.from_json(model.to_json())

    assert np.array_equal(again.predict(view.x_eval), model.predict(view.x_eval))


def test_an_inconsistent_json_is_refused(crm_view) -> None:
    import json

    view, labels = crm_view
    raw = json.loads(fit_linear(view, labels, np.ones(len(labels), dtype=bool)).to_json())
    raw["numeric_coefficients"] = raw["numeric_coefficients"][:-1]

    with pytest.raises(ValueError, match="inconsistent"):
        LinearModel.from_json(json.dumps(raw))
