"""The served model: one immutable reference, swapped atomically when the `champion` alias moves.

Handlers read `ModelState.current` once per request, so a request is answered entirely by one model version even
while a reload happens beside it. A failed load leaves the old model serving and is counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel

from churnops.config import Settings
from churnops.registry import CHAMPION_ALIAS, LoadedModel, configure_mlflow, load_model_version, resolve_alias
from serving import metrics
from serving.records import predict_request_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    model: LoadedModel
    request_type: type[BaseModel]


class ModelState:
    def __init__(self, settings: Settings, model_name: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the champion if it differs from the served version. Returns True when a new version is served."""
        with self._lock:  # one load at a time; readers never wait on this lock
            try:
                configure_mlflow(self.settings)
                version = resolve_alias(self.model_name, CHAMPION_ALIAS)
                if self.current is not None and self.current.model.version == version:
                    return False
                model = load_model_version(self.model_name, version)
            except Exception as error:  # registry unreachable, alias missing, corrupted artifact...
                self.last_error = f"{type(error).__name__}: {error}"
                metrics.MODEL_RELOADS.labels(outcome="failed").inc()
                log.warning("cannot load %s@%s: %s", self.model_name, CHAMPION_ALIAS, self.last_error)
                return False
            previous = self.current
            self.current = ServedModel(model=model, request_type=predict_request_model(model.schema))
            self.last_error = None
            metrics.MODEL_RELOADS.labels(outcome="loaded").inc()
            if previous is not None:
                metrics.MODEL_INFO.labels(
                    model_name=self.model_name, model_version=previous.model.version
                ).set(0)
            metrics.MODEL_INFO.labels(model_name=self.model_name, model_version=version).set(1)
            metrics.MODEL_LOADED_AT.set(time.time())
            log.info("serving %s v%s", self.model_name, version)
            return True

    async def poll(self) -> None:
        """Follow the alias forever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.settings.serving.reload_interval_seconds)
            await asyncio.to_thread(self.refresh)
