"""Scoring a request's customers with the served model: the API key, the served champion, features from the request
or from the online feature table, scores, decisions and bands, and the prediction log. The routes in serving/app.py
only read the request and shape the response."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import SecretStr, ValidationError

from churnops.config import ServingSettings
from churnops.serving import metrics
from churnops.serving.fast_body import RequestRows
from churnops.serving.online import OnlineFeatureReader, OnlineStoreUnavailable
from churnops.serving.prediction_log import LoggedRequest, PredictionLog, request_features_json
from churnops.serving.problems import ApiProblem, instance_loc
from churnops.serving.records import ScoredRows, validation_problems
from churnops.serving.state import ModelState, ServedModel


def secret_matches(expected: SecretStr, given: str | None) -> bool:
    # Constant-time comparison: the time to refuse a key says nothing about how much of it was right.
    return given is not None and hmac.compare_digest(expected.get_secret_value().encode(), given.encode())


class PredictionService:
    """What the predict routes share: one per app, built by `create_app`."""

    def __init__(
        self,
        serving: ServingSettings,
        dataset: str,
        state: ModelState,
        online: OnlineFeatureReader,
        prediction_log: PredictionLog,
    ) -> None:
        self.serving = serving
        self.dataset = dataset
        self.state = state
        self.online = online
        self.prediction_log = prediction_log
        # Bound once per feature: `.labels()` takes a lock and builds a key, on every request with such a value.
        self._out_of_range_counters: dict[str, Any] = {}

    def require_api_key(self, api_key: str | None) -> None:
        if self.serving.api_key is not None and not secret_matches(self.serving.api_key, api_key):
            raise ApiProblem.one(
                401,
                ["header", "X-API-Key"],
                "unauthorized",
                "missing or invalid API key (header X-API-Key)",
                headers={"WWW-Authenticate": "APIKey"},
            )

    def served(self) -> ServedModel:
        current = self.state.current
        if current is None:
            raise ApiProblem.one(
                503, [], "no_model", f"no model loaded yet: {self.state.status.last_error_kind or 'loading'}"
            )
        return current

    def log_predictions(
        self,
        endpoint: str,
        current: ServedModel,
        rows: RequestRows,
        scored: ScoredRows,
        request_id: str | None,
        started: float,
    ) -> None:
        """Queue the request's predictions (written by the log's thread, a flush at a time)."""
        if not self.prediction_log.enabled:
            return
        request = LoggedRequest(
            time.time(),
            request_id,
            endpoint,
            time.perf_counter() - started,
            rows.customer_ids,
            scored.probabilities,
            scored.decisions,
            scored.bands,
            request_features_json(current.feature_names, rows.records, rows.values),
        )
        self.prediction_log.submit(current.model.name, current.version, current.feature_names, request)

    async def rows_of_instances(
        self, current: ServedModel, instances: list[Any], loc_prefix: tuple[str | int, ...]
    ) -> RequestRows:
        """Validated instances (the detailed path) as rows: each one's own features, or the customer's published
        row validated against the schema."""
        features: list[Mapping[str, Any] | None] = []
        online_cutoffs: dict[int, str] = {}
        to_look_up: dict[str, list[int]] = {}
        for index, instance in enumerate(instances):
            if instance.features is not None:
                features.append(instance.features.__dict__)
            elif instance.customer_id is None:
                raise ApiProblem.one(
                    422,
                    instance_loc(loc_prefix, index, "features"),
                    "missing",
                    "Field required: send the customer's features, or only a customer_id to use its published features",
                )
            else:
                features.append(None)
                to_look_up.setdefault(instance.customer_id, []).append(index)
        if to_look_up:
            try:
                found = await self.online.fetch(list(to_look_up))
            except OnlineStoreUnavailable as error:
                raise ApiProblem.one(503, ["customer_id"], "online_store_unavailable", str(error)) from None
            absent = [customer for customer in to_look_up if customer not in found]
            if absent:
                raise ApiProblem(
                    404,
                    [
                        {
                            "loc": instance_loc(loc_prefix, index, "customer_id"),
                            "type": "not_found",
                            # The position names the customer; the id itself is not echoed (it may be personal data).
                            "msg": f"this customer_id has no published features in dataset {self.dataset!r}",
                        }
                        for customer in absent[:20]
                        for index in to_look_up[customer][:1]
                    ],
                )
            for customer, indices in to_look_up.items():
                published = found[customer]
                where = instance_loc(loc_prefix, indices[0], "customer_id")
                record = self._published_record(current, published.features, where)
                for index in indices:
                    features[index] = record
                    online_cutoffs[index] = published.cutoff.isoformat()
        records: list[Mapping[str, Any]] = features  # type: ignore[assignment]  # every None was filled above
        customer_ids = [instance.customer_id for instance in instances]
        return RequestRows(customer_ids, records, current.model.schema.encode_records(records), online_cutoffs)

    def _published_record(
        self, current: ServedModel, stored: Mapping[str, Any], where: list[str | int]
    ) -> Mapping[str, Any]:
        wanted = {name: stored[name] for name in current.model.schema.columns if name in stored}
        try:
            return current.record_type.model_validate(wanted).__dict__
        except ValidationError as error:
            # Located by the request's position of the customer_id, not by the id (it may be personal data).
            problems = validation_problems(error.errors(), prefix=(*where, "online_features"))
            for problem in problems:
                problem["msg"] = (
                    f"the published features of this customer do not fit model v{current.version}: "
                    f"{problem['msg']} (republish the online features)"
                )
            raise ApiProblem(409, problems) from None

    def score_rows(
        self, current: ServedModel, rows: RequestRows, explain: bool, loc_prefix: tuple[str | int, ...] = ()
    ) -> ScoredRows:
        """Scores, decisions and bands of every row, with one prediction call for the whole request."""
        matrix = rows.matrix
        flagged = self._out_of_range(current, matrix, loc_prefix)
        if flagged and self.serving.out_of_range_policy == "clip":
            matrix = current.ranges.clip(matrix)  # type: ignore[union-attr]  # flagged implies ranges
        scores = current.score(matrix)
        finite = np.isfinite(scores)
        if not finite.all():
            first = int(np.flatnonzero(~finite)[0])
            if first in flagged:  # e.g. 1e308 through the stored blend: the input's fault, said as such
                raise ApiProblem(422, self._range_problems(current, loc_prefix, {first: flagged[first]}))
            raise ApiProblem.one(500, [], "model_error", f"model v{current.version} produced a non-finite score")
        return ScoredRows(
            probabilities=scores.tolist(),
            decisions=(scores >= current.model.threshold).tolist(),
            bands=current.bands.band_many(scores),
            out_of_range=flagged,
            explanations=(
                current.explain(rows.record_mappings(current.feature_names), self.serving.explain_top_features)
                if explain
                else None
            ),
        )

    def _out_of_range(
        self, current: ServedModel, matrix: np.ndarray, loc_prefix: tuple[str | int, ...]
    ) -> dict[int, list[str]]:
        """{row: features outside the training range}, counted per feature; refused (422) under "reject"."""
        if current.ranges is None:
            return {}
        outside = current.ranges.outside(matrix)
        if not outside.any():
            return {}
        names = current.ranges.names
        counters = self._out_of_range_counters
        buffer = metrics.BUFFER
        for column, count in enumerate(outside.sum(axis=0).tolist()):
            if count:
                name = names[column]
                if name not in counters:
                    counters[name] = metrics.OUT_OF_RANGE.labels(feature=name)
                # Through the request path's buffer: a direct `inc` in multiprocess mode is a lock, a getpid and an
                # mmap write, per flagged feature of every request.
                buffer.inc(counters[name], count)
        flagged: dict[int, list[str]] = {}
        rows, columns = np.nonzero(outside)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            flagged.setdefault(row, []).append(names[column])
        if self.serving.out_of_range_policy == "reject":
            raise ApiProblem(422, self._range_problems(current, loc_prefix, flagged))
        return flagged

    @staticmethod
    def _range_problems(
        current: ServedModel, loc_prefix: tuple[str | int, ...], flagged: dict[int, list[str]]
    ) -> list[dict[str, Any]]:
        ranges = current.ranges
        assert ranges is not None
        problems = [
            {
                "loc": [*instance_loc(loc_prefix, row, "features"), name],
                "type": "out_of_range",
                # The training range, not the value sent (it is not echoed).
                "msg": f"value outside the range seen in training {ranges.describe(name)} "
                "(serving.out_of_range_policy)",
            }
            for row, names in flagged.items()
            for name in names
        ]
        return problems[:50]
