"""The training report of the served version (jobs/report.py logs it to MLflow under `report/`): the model card and
the evaluation plots, fetched once per version into a private temporary folder and served from there."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from churnops.registry import LoadedModel

REPORT_ARTIFACT_DIR = "report"
MODEL_CARD_FILE = "model_card.md"
# The plots a training run writes (jobs/report.py), in the order the page shows them, with what each one shows.
PLOTS = {
    "roc.png": "ROC curve: true positive rate against false positive rate",
    "gain_lift.png": "Cumulative gain and lift: share of churners found in the top share of the list",
    "calibration.png": "Calibration: predicted churn probability against the observed churn rate",
    "precision_recall.png": "Precision against recall",
    "shap_summary.png": "SHAP summary: how each feature's values push the score",
    "importance_gain.png": "Feature importance (gain)",
}


class ReportArtifacts:
    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="churnops-pages-"))
        self._lock = threading.Lock()

    def report_folder(self, model: LoadedModel) -> Path | None:
        """The served version's report folder (downloaded on first use), or None when its run logged none."""
        run_id = model.metadata.get("training_run_id")
        if not run_id:
            return None
        target = self._folder / f"v{model.version}"
        with self._lock:
            if not target.exists():
                import mlflow

                staging = Path(tempfile.mkdtemp(dir=self._folder))
                try:
                    mlflow.artifacts.download_artifacts(
                        run_id=str(run_id), artifact_path=REPORT_ARTIFACT_DIR, dst_path=str(staging)
                    )
                except Exception:  # a run without a report, or a registry that cannot be read: the page says so
                    return None
                (staging / REPORT_ARTIFACT_DIR).rename(target)
        return target

    def model_card(self, model: LoadedModel) -> str | None:
        folder = self.report_folder(model)
        card = folder / MODEL_CARD_FILE if folder else None
        return card.read_text() if card and card.exists() else None

    def plots(self, model: LoadedModel) -> list[tuple[str, str]]:
        """(file name, description) of the plots the served version's report holds."""
        folder = self.report_folder(model)
        return [(name, text) for name, text in PLOTS.items() if folder and (folder / name).exists()]

    def plot_path(self, model: LoadedModel, name: str) -> Path | None:
        if name not in PLOTS:  # only the known file names: nothing else of the folder is reachable
            return None
        folder = self.report_folder(model)
        path = folder / name if folder else None
        return path if path and path.exists() else None
