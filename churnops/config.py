"""The one typed configuration of churnops.

Every process builds one `Settings` at its edge (CLI, DAG task, API start-up) and passes it down. The defaults are
the *embedded* deployment: everything lives under a git-ignored working folder (`.churnops/` in the checkout),
Airflow and MLflow on SQLite, Spark in local mode. Every field is overridable with a `CHURNOPS_*` environment
variable (nested fields with `__`, e.g. `CHURNOPS_SERVING__API_KEY`), or a secret file in `secrets_dir`, which is
how the full deployment points the same code at PostgreSQL, a Spark master and an MLflow server.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PACKAGE_DIR = Path(__file__).resolve().parent
# In a source checkout (the embedded default) the working folder sits beside the code; an installed wheel has no
# checkout, so it falls back to the current directory.
_CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").exists() else Path.cwd()
BUILTIN_DATASETS_DIR = PACKAGE_DIR / "datasets"


class SparkSettings(BaseModel):
    master: str = "local[*]"
    driver_memory: str = "4g"
    # Heap of each executor on a cluster master (standalone, YARN, Kubernetes): must fit the worker's memory. In local
    # mode the executors are threads of the driver JVM and `driver_memory` bounds them instead.
    executor_memory: str = "1g"
    # What each executor may use beyond its heap, so a deployment states its whole budget: the JVM's off-heap memory
    # (`spark.executor.memoryOverhead`; None: Spark's max(384 MiB, 10 % of the heap)) and its Python workers'
    # (`spark.executor.pyspark.memory`: each worker's address space is capped at it divided by
    # `spark.executor.cores`; None: unbounded, and on YARN or Kubernetes counted inside the overhead instead).
    executor_memory_overhead: str | None = None
    executor_pyspark_memory: str | None = None
    # Two cores: a handful of shuffle partitions beats Spark's default of 200 tiny tasks.
    shuffle_partitions: int = 4
    # Debian's PostgreSQL JDBC driver (`apt-get install libpostgresql-jdbc-java`): handed to every session through
    # `spark.jars` when the file exists, so a contract's `postgres` event source reads with nothing downloaded.
    jdbc_jars: tuple[Path, ...] = (Path("/usr/share/java/postgresql.jar"),)

    def executor_memory_conf(self) -> dict[str, str]:
        """The executors' memory beyond the heap that these settings state (none: Spark's defaults), as Spark
        configuration for a session and for spark-submit alike."""
        stated = {
            "spark.executor.memoryOverhead": self.executor_memory_overhead,
            "spark.executor.pyspark.memory": self.executor_pyspark_memory,
        }
        return {key: value for key, value in stated.items() if value}  # an empty variable: not stated


class TrainingSettings(BaseModel):
    n_trials: int = Field(20, ge=1)
    timeout_seconds: int | None = Field(None, ge=1)
    seed: int = 42
    cv_folds: int = Field(2, ge=1)
    # A challenger replaces the champion only if its out-of-time ROC AUC is higher by more than this...
    promotion_margin: float = Field(0.002, ge=0.0)
    # ... and the gain is significant: DeLong's two-sided test of the paired AUC difference at this level.
    promotion_significance_level: float = Field(0.05, gt=0.0, lt=1.0)
    # Non-inferiority: the challenger's Brier score and log loss may exceed the champion's by at most these.
    promotion_brier_tolerance: float = Field(0.002, ge=0.0)
    promotion_log_loss_tolerance: float = Field(0.005, ge=0.0)
    min_auc: float = Field(0.6, ge=0.0, le=1.0)
    # How the decision threshold stored with the model is chosen (on out-of-fold predictions, never out of time):
    # best F1, or the score that flags the top `threshold_top_fraction` of customers (a campaign budget).
    threshold_objective: Literal["f1", "top_fraction"] = "f1"
    threshold_top_fraction: float = Field(0.10, gt=0.0, lt=1.0)
    # Row budget per labelled cutoff: a cutoff with more rows is sampled down to about this many in Spark, stratified
    # by label (each label keeps the same share of its rows) and seeded by `seed` (churnops.jobs.training.sampling);
    # None: every row. What was kept is recorded in the model card.
    max_rows_per_cutoff: int | None = Field(None, ge=100)


class WatermarkSettings(BaseModel):
    """How a run waits for its data (`CHURNOPS_WATERMARK__*`): a run on date D needs events through D - 1."""

    # Days the latest event may lag behind D - 1 and the run still goes ahead (a late source system).
    tolerance_days: int = Field(0, ge=0)
    # The feature DAG's sensor: how often it looks, how long it waits before failing, and whether it holds a worker
    # slot while waiting (`poke`, what `airflow dags test` needs) or frees it between looks (`reschedule`).
    poke_interval_seconds: float = Field(300.0, gt=0)
    timeout_seconds: float = Field(6 * 3600.0, gt=0)
    sensor_mode: Literal["poke", "reschedule"] = "poke"


class ScoringSettings(BaseModel):
    # Named risk bands as score-quantile cut points of each scoring list: top 10 % "high", next 20 % "medium".
    risk_bands: dict[str, float] = {"high": 0.9, "medium": 0.7}
    export_top_k: int = Field(1000, ge=1)
    # Who scores a list: `pandas` (one process on the driver), `spark` (the executors: churnops.jobs.score_spark),
    # or `auto`: Spark when the scored cutoff holds at least `spark_min_rows` customers (read from the snapshot's
    # metadata, so choosing costs no Spark start). Below a few million rows pandas is faster: Spark's start alone
    # costs seconds.
    engine: Literal["pandas", "spark", "auto"] = "pandas"
    spark_min_rows: int = Field(2_000_000, ge=1)

    def engine_for(self, rows: int) -> Literal["pandas", "spark"]:
        """The engine that scores a list of `rows` customers."""
        if self.engine == "auto":
            return "spark" if rows >= self.spark_min_rows else "pandas"
        return self.engine


class IngestionSettings(BaseModel):
    """Who turns source files into bronze (`CHURNOPS_INGESTION__*`): `pandas` (each file read whole on the driver,
    churnops.jobs.ingest), `spark` (the executors read and judge every new file at once: churnops.jobs.ingest_spark),
    or `auto`: Spark when the files to ingest hold at least `spark_min_bytes` in total (their sizes are listed
    anyway, so choosing costs no Spark start). Both apply the same rules with the same reasons and commit the same
    manifest; below a few hundred MB pandas is faster (Spark's start alone costs seconds)."""

    engine: Literal["pandas", "spark", "auto"] = "pandas"
    spark_min_bytes: int = Field(512 * 2**20, ge=1)

    def engine_for(self, total_bytes: int) -> Literal["pandas", "spark"]:
        """The engine that ingests source files of `total_bytes` bytes in total."""
        if self.engine == "auto":
            return "spark" if total_bytes >= self.spark_min_bytes else "pandas"
        return self.engine


class MonitoringSettings(BaseModel):
    """Drift thresholds, realized performance, retraining control and the exporter (`CHURNOPS_MONITORING__*`)."""

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
    # Retrain anyway when the champion's training data is older than this (None = no scheduled retraining).
    retrain_every_days: int | None = Field(30, ge=1)
    # Which triggers may retrain: `drift` (drift, realized-performance drop, `retrain_every_days`), `schedule:<N>d`
    # (only every N days of data) or `never` (only an operator, and the first training of a dataset).
    retrain_policy: str = Field("drift", pattern=r"^(drift|never|schedule:[1-9][0-9]*d)$")

    exporter_host: str = "127.0.0.1"
    exporter_port: int = 9108
    # Seconds the exporter reuses what it read from MLflow (the registry is slower than the metrics tables).
    exporter_mlflow_cache_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _warn_below_drift(self) -> MonitoringSettings:
        if self.psi_warn > self.psi_drift:
            raise ValueError(f"psi_warn ({self.psi_warn}) must not exceed psi_drift ({self.psi_drift})")
        return self


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # None = auth off (local use). Set both in any shared deployment.
    api_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    reload_interval_seconds: float = Field(30.0, gt=0)
    max_batch_rows: int = Field(1000, ge=1)
    # None = derived from max_batch_rows and the served model's schema: the size of max_batch_rows instances with
    # every value at its widest legal length (churnops.serving.records.batch_body_bytes), so a full batch always fits.
    max_body_bytes: int | None = Field(None, ge=1024)
    # Top contributing features returned with `explain=true`.
    explain_top_features: int = Field(5, ge=1)
    # A numeric value outside the range seen in training (stored with the model): "flag" scores it and names the
    # feature in the response's `out_of_range`, "clip" scores it at the nearest bound (and flags it), "reject"
    # answers 422 naming the field. Every such value is counted in churnops_out_of_range_values_total.
    out_of_range_policy: Literal["flag", "clip", "reject"] = "flag"
    # Prediction log (PostgreSQL at Settings.database_url): appended in batches by a background thread per
    # worker; when the database is unreachable or the queue is full, predictions are dropped and counted.
    prediction_log_enabled: bool = True
    # The writer wakes when this many rows wait (or every flush_seconds) and writes all that is queued in one COPY.
    prediction_log_batch_rows: int = Field(500, ge=1)
    prediction_log_flush_seconds: float = Field(1.0, gt=0)
    prediction_log_max_pending: int = Field(20_000, ge=1)
    prediction_log_retry_seconds: float = Field(5.0, gt=0)
    # Bounds a hung database: connection set-up and each statement (prediction log and online look-ups).
    database_timeout_seconds: float = Field(3.0, gt=0)
    # Start-up waits this long for the first champion load, then answers (503 on /ready) while loading goes on:
    # a registry that does not answer must not keep the process from answering its liveness probe.
    startup_load_timeout_seconds: float = Field(10.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHURNOPS_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
        secrets_dir=os.environ.get("CHURNOPS_SECRETS_DIR") or None,
    )

    home: Path = _CHECKOUT / ".churnops"
    dataset: str = "synthetic"
    mlflow_tracking_uri: str | None = None
    # Basic-auth credentials for an MLflow server started with its basic-auth app (the full deployment's). None =
    # send none (the embedded SQLite store has no server). In a deployment the password is the secret file
    # `churnops_mlflow_tracking_password`; `configure_mlflow` hands both to MLflow's client.
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: SecretStr | None = None
    # The platform's PostgreSQL database (scores, prediction log, metrics). None = not configured.
    database_url: SecretStr | None = None
    # The database a contract's `postgres` event source is read from (secret file `churnops_source_database_url`).
    # None: the platform database.
    source_database_url: SecretStr | None = None
    # Where Optuna keeps its studies (an SQLAlchemy URL). None = SQLite under the working folder (the embedded
    # default). The full deployment points it at the platform database's `optuna` schema (migration 0010), so a
    # training task retried on another worker resumes the same study: secret file `churnops_optuna_storage_url`.
    optuna_storage_url: SecretStr | None = None
    airflow_dags_folder: Path = _CHECKOUT / "airflow" / "dags"
    spark: SparkSettings = SparkSettings()
    watermark: WatermarkSettings = WatermarkSettings()
    training: TrainingSettings = TrainingSettings()
    scoring: ScoringSettings = ScoringSettings()
    ingestion: IngestionSettings = IngestionSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @model_validator(mode="after")
    def _mlflow_credentials_come_in_pairs(self) -> Settings:
        if (self.mlflow_tracking_username is None) != (self.mlflow_tracking_password is None):
            given, missing = (
                ("mlflow_tracking_username", "mlflow_tracking_password")
                if self.mlflow_tracking_password is None
                else ("mlflow_tracking_password", "mlflow_tracking_username")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: set both (CHURNOPS_{missing.upper()}, or the secret file "
                f"churnops_{missing}) or neither"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - pydantic-settings' hook signature
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The default secrets reader sees only top-level fields; the nested one also reads
        # `churnops_serving__api_key`, so auth cannot silently stay off in a deployment.
        return init_settings, env_settings, dotenv_settings, NestedSecretsSettingsSource(file_secret_settings)

    # Working-folder layout: one place builds every path.
    @cached_property
    def data_dir(self) -> Path:
        return self.home / "data"

    @cached_property
    def features_dir(self) -> Path:
        return self.home / "features"

    @cached_property
    def scores_dir(self) -> Path:
        return self.home / "scores"

    @cached_property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @cached_property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @cached_property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    def mlflow_client_environment(self) -> dict[str, str]:
        """The variables MLflow's client reads a server's basic-auth credentials from (empty when none are set)."""
        if self.mlflow_tracking_username is None or self.mlflow_tracking_password is None:
            return {}
        return {
            "MLFLOW_TRACKING_USERNAME": self.mlflow_tracking_username,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_tracking_password.get_secret_value(),
        }

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def optuna_storage(self) -> str:
        if self.optuna_storage_url is not None:
            return self.optuna_storage_url.get_secret_value()
        return f"sqlite:///{self.home / 'optuna.db'}"

    def airflow_environment(self) -> dict[str, str]:
        """Environment that points an `airflow` command at the embedded Airflow (SQLite metadata, this repo's DAGs).

        Values already set in the environment win, so the full deployment's settings pass through untouched.
        """
        venv_bin = str(Path(sys.executable).parent)
        embedded = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.airflow_dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # LocalExecutor forks `parallelism` workers at start; two cores do not need 32.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_CONN_SPARK_DEFAULT": f'{{"conn_type": "spark", "host": "{self.spark.master}"}}',
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
        env = {**embedded, **{k: v for k, v in os.environ.items() if k in embedded}}
        env["CHURNOPS_HOME"] = str(self.home)
        env["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        return env
