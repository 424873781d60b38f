"""The current champion as the gate sees it: absent, scored on the challenger's evaluation rows, or unavailable."""

from __future__ import annotations

import numpy as np

from churnops.jobs.training.data import TrainingData
from churnops.jobs.training.gate import Champion, ChampionScores, ChampionUnavailable, NoChampion
from churnops.registry import champion_or_none, load_model_version

# An error's text is recorded in MLflow tags and the database; a stack of nested causes is cut to this length.
MAX_ERROR_CHARS = 500


def champion_for_comparison(model_name: str, data: TrainingData) -> Champion:
    """The registry's champion re-scored on the same evaluation rows as the challenger.

    NoChampion only when `champion_or_none` finds no model or no alias (a registry that cannot answer raises);
    a champion that cannot be loaded, needs features these rows lack, or gives non-finite scores is unavailable,
    which the gate refuses.
    """
    version = champion_or_none(model_name)
    if version is None:
        return NoChampion()
    number = str(version.version)
    try:
        model = load_model_version(model_name, number)
    except Exception as error:  # artifact store down, deleted or corrupt artifact, incompatible model...
        return ChampionUnavailable(number, f"loading failed: {type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
    missing = sorted(set(model.schema.columns) - set(data.eval.columns))
    if missing:
        return ChampionUnavailable(number, f"it needs features the data no longer has: {missing}"[:MAX_ERROR_CHARS])
    try:
        scores = model.predict_matrix(model.schema.encode_frame(data.eval))
    except Exception as error:
        return ChampionUnavailable(number, f"scoring failed: {type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
    if scores.shape != (len(data.eval),) or not np.isfinite(scores).all():
        return ChampionUnavailable(number, "scoring gave non-finite or misshapen scores on the evaluation rows")
    return ChampionScores(number, scores)
