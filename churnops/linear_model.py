"""The logistic-regression model family in a form the registry can store and serving can load safely: plain
numbers in a JSON file, scored with numpy on the encoded matrix `FeatureSchema` produces (never a pickle).

It mirrors the training pipeline (`churnops.jobs.training.candidates.logistic_pipeline`): numeric columns are
imputed with their training median (plus a missing-indicator for columns that had gaps), put on a signed-log1p
scale and standardised; each categorical column is one-hot encoded, its integer code in the matrix mapped back to
its level (a missing or unseen value is the `<missing>` level, as LightGBM treats both as missing). It answers the
part of LightGBM's `Booster` interface the platform uses: `predict` (probabilities, or per-feature contributions),
`feature_name` and `feature_importance`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# The MLmodel flavour churnops writes for this family, and the file its `data` entry names.
LINEAR_FLAVOR = "churnops_linear"
LINEAR_MODEL_FILE = "linear_model.json"
MISSING_LEVEL = "<missing>"


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Counts and amounts are heavy-tailed; a linear model needs them on a log scale."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic regression over the encoded feature matrix (numeric columns first, then categoricals).

    `scale_mean`/`scale_std`/`numeric_coefficients` run over the numeric columns followed by their
    missing-indicators (`indicator_columns`, positions among the numeric columns). `level_coefficients[name]` maps
    each categorical level (as the schema's vocabulary spells it) to its one-hot coefficient; a level the fit never
    saw has none (term 0). `categorical_mean_terms` is each categorical term's mean over the training rows, moved
    into the bias so that contributions are centred like SHAP values (numeric terms are centred by the scaler).
    """

    feature_names: list[str]
    numeric: list[str]
    vocabularies: dict[str, list[str]]
    medians: list[float]
    indicator_columns: list[int]
    scale_mean: list[float]
    scale_std: list[float]
    numeric_coefficients: list[float]
    level_coefficients: dict[str, dict[str, float]]
    categorical_mean_terms: dict[str, float]
    intercept: float
    importance: list[float]

    def __post_init__(self) -> None:
        # Per categorical column, the coefficient of each code (the last slot: missing or unseen).
        by_code = {
            name: np.array([self.level_coefficients[name].get(level, 0.0) for level in [*vocab, MISSING_LEVEL]])
            for name, vocab in self.vocabularies.items()
        }
        object.__setattr__(self, "_by_code", by_code)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Each feature's term of the logit (centred), and the bias last: LightGBM's `pred_contrib` layout."""
        matrix = np.asarray(matrix, dtype=np.float64)
        n_numeric = len(self.numeric)
        values = matrix[:, :n_numeric]
        missing = np.isnan(values)
        imputed = np.where(missing, np.asarray(self.medians), values)
        block = np.hstack([imputed, missing[:, self.indicator_columns].astype(np.float64)])
        standardised = (signed_log1p(block) - np.asarray(self.scale_mean)) / np.asarray(self.scale_std)
        terms = standardised * np.asarray(self.numeric_coefficients)
        out = np.empty((len(matrix), len(self.feature_names) + 1), dtype=np.float64)
        out[:, :n_numeric] = terms[:, :n_numeric]
        # A missing-indicator's term belongs to the column it flags.
        out[:, self.indicator_columns] += terms[:, n_numeric:]
        for j, name in enumerate(self.vocabularies, start=n_numeric):
            codes = matrix[:, j]
            slots = np.where(np.isnan(codes), len(self.vocabularies[name]), np.nan_to_num(codes)).astype(np.intp)
            out[:, j] = self._by_code[name][slots] - self.categorical_mean_terms[name]  # type: ignore[attr-defined]
        out[:, -1] = self.intercept + sum(self.categorical_mean_terms.values())
        return out

    def predict(self, matrix: np.ndarray, num_threads: int = 0, pred_contrib: bool = False) -> np.ndarray:  # noqa: ARG002
        """Probabilities for encoded rows, or with `pred_contrib` the logit's per-feature terms and bias
        (`num_threads` is accepted for LightGBM's signature: numpy needs no thread pool here)."""
        contributions = self.contributions(matrix)
        if pred_contrib:
            return contributions
        return 1.0 / (1.0 + np.exp(-contributions.sum(axis=1)))

    def feature_name(self) -> list[str]:
        return list(self.feature_names)

    def feature_importance(self, importance_type: str = "gain") -> np.ndarray:  # noqa: ARG002
        """Mean absolute logit term of each feature over the training rows (a linear model has no split gain;
        whatever `importance_type` asks, this is what ranks its features)."""
        return np.asarray(self.importance, dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LinearModel:
        """The model from its JSON file; refuses a file whose parts do not fit together."""
        raw = json.loads(text)
        try:
            model = cls(**raw)
        except (TypeError, KeyError) as error:  # fields missing or unknown, or a vocabulary without coefficients
            raise ValueError(f"the linear model's JSON is inconsistent: {error}") from error
        n_numeric, n_indicators = len(model.numeric), len(model.indicator_columns)
        lengths = {len(model.medians)} == {n_numeric} and {
            len(model.scale_mean),
            len(model.scale_std),
            len(model.numeric_coefficients),
        } == {n_numeric + n_indicators}
        if (
            not lengths
            or model.feature_names != [*model.numeric, *model.vocabularies]
            or set(model.level_coefficients) != set(model.vocabularies)
            or len(model.importance) != len(model.feature_names)
        ):
            raise ValueError("the linear model's JSON is inconsistent (column counts or names do not match)")
        return model

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        return cls.from_json(path.read_text())
