"""The current champion as the gate sees it: absent, scored on the challenger's evaluation rows, or unavailable."""

from __future__ import annotations

import logging

from churnops.registry import champion_or_none, load_model_version
from jobs.training.data import TrainingData
from jobs.training.gate import Champion, ChampionScores, ChampionUnavailable, NoChampion

log = logging.getLogger(__name__)


def champion_for_comparison(model_name: str, data: TrainingData) -> Champion:
    """The registry's champion re-scored on the same evaluation rows as the challenger."""
    version = champion_or_none(model_name)
    if version is None:
        return NoChampion()
    try:
        model = load_model_version(model_name, str(version.version))
    except Exception as error:  # its artifact is unreadable
        log.warning("current champion of %s cannot be loaded (%s); treating as absent", model_name, error)
        return NoChampion()
    if set(model.schema.columns) - set(data.eval.columns):
        return ChampionUnavailable(model.version, "needs features the data no longer has")
    return ChampionScores(model.version, model.predict_matrix(model.schema.encode_frame(data.eval)))
