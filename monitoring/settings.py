"""Settings of drift monitoring, realized performance, retraining control and the exporter.

Read from `CHURNOPS_MONITORING__*` environment variables (the same names a nested `Settings.monitoring` field
would use, e.g. `CHURNOPS_MONITORING__PSI_DRIFT=0.25`), so the full deployment configures them like every other
churnops setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitoringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHURNOPS_MONITORING__", env_ignore_empty=True, extra="ignore")

    # PSI thresholds: a feature at or above `psi_warn` is worth a look, at or above `psi_drift` it has drifted.
    psi_warn: float = Field(0.1, gt=0)
    psi_drift: float = Field(0.2, gt=0)
    # A feature has drifted in its missing values when their share moved by at least this much (absolute).
    missing_share_drift: float = Field(0.05, gt=0, le=1)
    # Which rows of the champion's training snapshot are the reference. `out_of_time` (default): the latest
    # matured cutoff the champion was validated on. `train`/`all` span many months, and tenure-like features
    # (days since signup) differ between those months and today by construction.
    reference_cutoffs: Literal["out_of_time", "train", "all"] = "out_of_time"
    # Rows sampled from each side at most (seeded), to keep Evidently's report fast and small.
    max_rows: int = Field(20_000, ge=100)
    # The online side of `current`: the prediction log of the last N days, used when it has enough rows.
    prediction_log_days: int = Field(7, ge=1)
    prediction_log_min_rows: int = Field(200, ge=1)

    # Retraining control. Drift fires at once when the importance-weighted share of drifted features reaches
    # `min_weighted_drift_share`; any smaller drift on important features must persist over `confirm_runs`
    # consecutive drift runs.
    min_weighted_drift_share: float = Field(0.3, gt=0, le=1)
    # Features with less than this share of the champion's total gain importance do not count for drift.
    min_feature_importance: float = Field(0.01, ge=0, le=1)
    confirm_runs: int = Field(2, ge=1)
    cooldown_hours: float = Field(24.0, ge=0)
    # A realized ROC AUC this far below the champion's out-of-time ROC AUC is a performance drop.
    performance_drop_margin: float = Field(0.05, ge=0)
    # Retrain anyway when the champion's training is older than this (None = no scheduled retraining).
    retrain_every_days: int | None = Field(30, ge=1)

    exporter_host: str = "127.0.0.1"
    exporter_port: int = 9108
    # Seconds the exporter reuses what it read from MLflow (the registry is slower than the metrics tables).
    exporter_mlflow_cache_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _warn_below_drift(self) -> MonitoringSettings:
        if self.psi_warn > self.psi_drift:
            raise ValueError(f"psi_warn ({self.psi_warn}) must not exceed psi_drift ({self.psi_drift})")
        return self
